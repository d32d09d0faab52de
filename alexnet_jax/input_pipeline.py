"""The input pipeline's names as they always were; the code lives in `alexnet_jax.data`.

Each function takes `config.data` (or a `data.spec.DataSpec`) as before and parses it once
with `DataSpec.from_config`. See `alexnet_jax.data` for which module holds what.
"""

# pylint: disable=unused-import
import tensorflow as tf

from alexnet_jax.data import augment as _augment
from alexnet_jax.data import decode as _decode
from alexnet_jax.data import pipeline as _pipeline
from alexnet_jax.data import sources as _sources
from alexnet_jax.data import statistics as _statistics
from alexnet_jax.data.augment import center_patch, eval_views, lighting_shift
from alexnet_jax.data.decode import decode_stored, resize_and_center_crop
from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data.pipeline import device_batches
from alexnet_jax.data.sources import (BadImageError, DatasetInfo, ManualDownloadError,
                                      PreparedSource as _PreparedSource)
from alexnet_jax.data.spec import AUGMENT_ON, MEAN_PATCHES, STATISTICS, DataSpec
from alexnet_jax.data.statistics import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, IMAGENET_RGB_MEAN,
                                         ORIGINAL_EIGVEC, ORIGINAL_STDDEV, Stats, imagenet_stats)

_spec = DataSpec.from_config


def get_source(data_cfg, use_prepared=None):
  return _sources.get_source(_spec(data_cfg), use_prepared)


def dataset_info(data_cfg) -> DatasetInfo:
  return _sources.dataset_info(_spec(data_cfg))


def stats_path(data_cfg) -> str:
  return _sources.stats_path(_spec(data_cfg))


def prepared_dir(data_cfg) -> str:
  return _sources.prepared_dir(_spec(data_cfg))


def load_stats(data_cfg) -> Stats:
  return _statistics.load_stats(_spec(data_cfg))


def steps_per_epoch(data_cfg, global_batch_size: int) -> int:
  return _pipeline.steps_per_epoch(_spec(data_cfg), global_batch_size)


def train_batches(data_cfg, **kw):
  return _pipeline.train_batches(_spec(data_cfg), **kw)


def eval_batches(data_cfg, **kw):
  return _pipeline.eval_batches(_spec(data_cfg), **kw)


def augment(encoded, label, epoch, index, *, data_cfg, stats: Stats, seed: int) -> dict:
  """One training example from its encoded image (decode, then `data.augment.augment`)."""
  spec = _spec(data_cfg)
  image = _decode.decode_stored(encoded, spec.stored_size)
  return {'images': _augment.augment(image, epoch, index, spec=spec, stats=stats, seed=seed),
          'labels': tf.cast(label, tf.int32)}

"""Before a run reads its data: the checks that turn bad data paths into a one-line error,
the one dataset build per run, and Sec. 2's statistics.

`train` and `evaluate` run these on the run's `DataSpec`, after the config is parsed
(`config.RunSpec`) and before anything is written or compiled.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from alexnet_jax import model, storage
from alexnet_jax.data import sources, statistics
from alexnet_jax.data.spec import DataSpec
from alexnet_jax.parallel import distributed

DATA_PATHS = ('data_dir', 'manual_dir', 'folder', 'prepared_dir', 'stats_file')


def check_data_paths(spec: DataSpec) -> None:
  """A one-line error naming any data path on a store that cannot be read (a scheme
  TensorFlow has no filesystem for, a missing bucket, no credentials), before any read."""
  for field in DATA_PATHS:
    value = getattr(spec, field)
    if value:
      storage.check_readable(value, f'config.data.{field}',
                             f'set --config.data.{field} to a local path or a gs:// one you can '
                             'read')


def build_dataset(spec: DataSpec) -> None:
  """One build per run: process 0 builds the dataset where its source needs one (TFDS
  downloads or generates it on first use); the others wait for it, then read the same
  build. A failed build (a missing manual download) is process 0's one line; the other
  processes stop with a line that points to it."""
  distributed.on_process_0(f'build the dataset {spec.source!r}',
                           lambda: sources.get_source(spec).prepare())


def check_dataset(spec: DataSpec, model_spec: model.Spec,
                  batch_size: int | None = None) -> sources.DatasetInfo:
  """The dataset (built once, by process 0) against the model, and (training, given the
  global `batch_size`) against the batch size."""
  check_data_paths(spec)
  build_dataset(spec)
  info = sources.dataset_info(spec)
  if info.num_classes != model_spec.num_classes:
    raise ValueError(f'The dataset has {info.num_classes} classes but config.model.num_classes '
                     f'is {model_spec.num_classes}: set --config.model.num_classes={info.num_classes}.')
  if batch_size is not None and batch_size > info.num_train:
    raise ValueError(f'config.batch_size {batch_size} is larger than the training split '
                     f'({info.num_train} images in {spec.source} {spec.train_split!r}): set '
                     f'--config.batch_size to at most {info.num_train}.')
  return info


def check_statistics_file(spec: DataSpec) -> None:
  """A statistics file that exists but cannot be read (a truncated copy) is named in one
  line, rather than failing inside np.load with a zipfile error naming no file."""
  if spec.statistics != 'train_split':
    return
  path = sources.stats_path(spec)
  if not tf.io.gfile.exists(path):
    return
  try:
    with tf.io.gfile.GFile(path, 'rb') as f, np.load(f) as z:
      for name in z.files:
        z[name]  # pylint: disable=pointless-statement  (reads and decompresses each array)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'the dataset statistics file {path} is damaged ({type(e).__name__}: '
                     f'{" ".join(str(e).split())[:120]}): delete it to compute it again, or set '
                     '--config.data.stats_file to a good copy.') from None


def ensure_statistics(spec: DataSpec) -> None:
  """Sec. 2's mean image (and Sec. 4.1's PCA) of this training split, before training.

  Process 0 computes them if the file is missing (one streaming pass with a progress
  line); the other processes wait for it and then read the same file. On a data_dir that
  is not shared, a process that still finds no file computes the same statistics itself.
  """
  if spec.statistics == 'imagenet':
    logging.info('config.data.statistics=imagenet: subtracting the ImageNet per-channel '
                 'mean, not this training split\'s mean image.')
    return
  check_statistics_file(spec)
  distributed.on_process_0('compute the dataset statistics', lambda: statistics.load_stats(spec))
  statistics.load_stats(spec)

"""TFDS datasets with 'image' and 'label' features: 'imagenette' and 'imagenet2012'."""

from __future__ import annotations

import os

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data.sources.base import ManualDownloadError, Source, data_dir


class TfdsSource(Source):
  """A TFDS builder, prepared (downloaded, generated) on first read."""

  def __init__(self, spec, builder):
    self._spec, self._builder, self._prepared = spec, builder, False
    self.class_names = list(builder.info.features['label'].names)

  @classmethod
  def builder(cls, spec):
    """The TFDS builder, not yet prepared (cheap: names and versions)."""
    return tfds.builder(spec.source, data_dir=spec.data_dir)

  @classmethod
  def from_spec(cls, spec):
    return cls(spec, cls.builder(spec))

  @classmethod
  def location_key(cls, spec):
    return cls.builder(spec).info.full_name.replace('/', '-')

  @property
  def data_location(self) -> str:
    """Where the build is: <data_dir>/<name>/<version>."""
    return str(self._builder.data_dir)

  def prepare(self):
    if not self._builder.is_prepared():
      self._log_build()
    self._builder.download_and_prepare()

  def _log_build(self):
    logging.info('Building %s in %s (once: later runs read it; see python -m '
                 'alexnet_jax.data.build).', self._builder.info.full_name, self.data_location)

  def identity(self, split):
    return DatasetIdentity(self._spec.source, self._builder.info.full_name, split)

  def _as_dataset(self, split):
    if not self._prepared:
      self.prepare()
      self._prepared = True
    return self._builder.as_dataset(
        split=split, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False))

  def num_examples(self, split):
    try:
      n = self._builder.info.splits[split].num_examples
    except KeyError:  # tfds.testing.mock_data without metadata knows no split sizes.
      n = 0
    if not n:
      n = int(self._as_dataset(split).cardinality())
    return n

  def records(self, split, process_index, process_count, order_seed=None):
    del order_seed  # TFDS wrote the examples shuffled.
    share = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count)
    return self._as_dataset(share).map(
        lambda ex: (ex['image'], tf.cast(ex['label'], tf.int64)))


class Imagenet2012(TfdsSource):
  """ILSVRC-2012: TFDS builds it from the two tar files of a manual download."""

  def prepare(self):
    if self._builder.is_prepared():
      return
    manual_dir = self._spec.manual_dir or os.path.join(data_dir(self._spec), 'downloads',
                                                       'manual')
    needed = ['ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar']
    missing = [f for f in needed if not tf.io.gfile.exists(os.path.join(manual_dir, f))]
    if not missing:
      self._log_build()
    try:
      # Tried even with files missing: under tfds.testing.mock_data it is a no-op.
      self._builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception:  # pylint: disable=broad-except
      if not missing:
        raise
      # TFDS's own message is a multi-line traceback; say in one line what to do.
      raise ManualDownloadError(
          f"imagenet2012 needs {' and '.join(needed)} (from image-net.org) in {manual_dir}; "
          f"missing {', '.join(missing)}. Put them there or point config.data.manual_dir "
          'at the folder that holds them.') from None

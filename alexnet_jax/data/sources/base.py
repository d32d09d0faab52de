"""`Source`: what every dataset gives the pipeline, and the helpers sources share."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import decode
from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data.spec import DataSpec


class ManualDownloadError(ValueError):
  """The imagenet2012 tar files are not where `config.data.manual_dir` points."""


class BadImageError(ValueError):
  """A file of the 'folder' source cannot be decoded or has no valid label."""


def data_dir(spec: DataSpec) -> str:
  return spec.data_dir or tfds.core.constants.DATA_DIR


def even_share(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of this process's contiguous share; sizes differ by at most one."""
  return n * process_index // process_count, n * (process_index + 1) // process_count


def epoch_seed(seed: int, epoch) -> tf.Tensor:
  return tf.stack([tf.constant(seed, tf.int64) * 1_000_003, tf.cast(epoch, tf.int64)])


class Source:
  """Undecoded examples of one dataset.

  `records` yields (loaded example, int64 label) in a fixed order, where a loaded example
  is what `stored_image` turns into the Sec. 2 image (encoded bytes for most sources).
  `epoch_records` yields one training epoch of (example index, payload, label) in shuffled
  order, where `load` turns a payload into a loaded example (a file read for folders), so
  that resuming skips examples before reading them.

  A new source is a subclass in its own file plus one line in `sources.registry.SOURCES`;
  it says how to build itself (`from_spec`) and the file-name-safe name of its dataset
  (`location_key`), which names the statistics file and the prepared copy.
  """

  class_names: list[str]

  @classmethod
  def from_spec(cls, spec: DataSpec) -> 'Source':
    raise NotImplementedError

  @classmethod
  def location_key(cls, spec: DataSpec) -> str:
    raise NotImplementedError

  def prepare(self) -> None:
    """Builds the dataset where it needs a build before it can be read (a TFDS dataset is
    downloaded or generated into its data_dir); sources read as they are do nothing."""

  def identity(self, split: str) -> DatasetIdentity:
    raise NotImplementedError

  def num_examples(self, split: str) -> int:
    raise NotImplementedError

  def records(self, split: str, process_index: int, process_count: int,
              order_seed: int | None = None) -> tf.data.Dataset:
    """`order_seed` asks for a uniformly random order of the whole split; sources stored
    in a random order already (TFDS shuffles when it writes, `prepare` writes shuffled)
    ignore it."""
    raise NotImplementedError

  def epoch_records(self, split, process_index, process_count, *, seed, epoch, buffer):
    """Stored order, then a shuffle buffer reseeded each epoch."""
    ds = self.records(split, process_index, process_count).enumerate()
    # The index folds the process in, so shares of different processes never share seeds.
    ds = ds.map(lambda i, r: (i * process_count + process_index, r[0], r[1]))
    return ds.shuffle(buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)

  def load(self, split: str, payload: tf.Tensor) -> tf.Tensor:
    del split
    return payload

  def loads_batches(self, split: str) -> bool:
    """Whether `load` takes a vector of payloads at once (and should be given batches)."""
    del split
    return False

  def stored_image(self, split: str, loaded: tf.Tensor, size: int) -> tf.Tensor:
    """A loaded example as the float32 [size, size, 3] image of Sec. 2 (mean not removed)."""
    del split
    return decode.decode_stored(loaded, size)

  def stored_uint8(self, split: str, loaded: tf.Tensor, size: int) -> tf.Tensor:
    """A loaded example as the uint8 [size, size, 3] stored image (rounded if resampled)."""
    del split
    return decode.decode_stored_uint8(loaded, size)

"""The prepared copy: a split stored once at `stored_size` by `python -m alexnet_jax.data.prepare`.

Reader and writer of both store formats live here, so a format is one file's business:
  'jpeg'  <split>/data-NNNNN.tfrecord: tf.train.Example {'image': JPEG bytes, 'label'}.
  'raw'   <split>/images.npy: uint8 [N, size, size, 3], memory-mapped when read, and
          <split>/labels.npy: int64 [N]. 3 x 256 x 256 bytes = 196,608 per image (about
          252 GB for ImageNet's 1.28M training images), read with no decode at all.
<split>/info.json is written last: num_examples, class_names, size, format and the identity
of the data the copy was made from. A split is read only if that identity is the
configured data's and its size is `config.data.stored_size`; otherwise the run stops with a
one-line error. The train split is written in a seeded random order, so a shuffle buffer
smaller than the split still mixes all classes.
"""

from __future__ import annotations

import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_jax import storage
from alexnet_jax.data import decode
from alexnet_jax.data.batches import Batches
from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data.sources.base import Source, epoch_seed, even_share
from alexnet_jax.data.spec import STORE_FORMATS

_RAW_IMAGES, _RAW_LABELS = 'images.npy', 'labels.npy'
_PREPARE_AGAIN = ('run `python -m alexnet_jax.data.prepare` with this config again, or set '
                  '--config.data.use_prepared=False.')


# ----------------------------------------------------------------------------- checks


def read_info(root: str, split: str) -> dict | None:
  path = os.path.join(root, split, 'info.json')
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def check_made_from(info: dict, current: DatasetIdentity, path: str) -> None:
  """A prepared copy is read only if it was made from exactly the configured data."""
  made_from = DatasetIdentity.from_json(info.get('dataset'))
  if made_from == current:
    return
  if made_from is None:
    was = 'data it does not record (written by an older version)'
  elif (made_from.source, made_from.location) == (current.source, current.location):
    was = (f'{made_from.num_files} files, and the folder now has {current.num_files} or '
           'other files' if current.source == 'folder' else made_from.describe())
  else:
    was = made_from.describe()
  raise ValueError(f'The prepared copy {path} was made from {was}, not from '
                   f'{current.describe()}: {_PREPARE_AGAIN}')


def check_stored(info: dict, size: int, path: str) -> None:
  """The copy's stored size and format are what this run reads."""
  stored = info.get('size')
  if stored != size:
    raise ValueError(f'The prepared copy {path} holds {stored}x{stored} images, but '
                     f'config.data.stored_size is {size}: set --config.data.stored_size='
                     f'{stored}, or {_PREPARE_AGAIN}')
  store_format = info.get('format', 'jpeg')  # Copies written before formats existed.
  if store_format not in STORE_FORMATS:
    raise ValueError(f'The prepared copy {path} has format {store_format!r}, not one of '
                     f'{STORE_FORMATS}: {_PREPARE_AGAIN}')


def _raw_needs_a_local_disk(folder: str) -> ValueError:
  return ValueError(
      f'{folder}: a raw prepared copy is memory-mapped, so it must be on a local disk: copy it '
      f'there (gcloud storage cp -r {folder} /local/dir) and set --config.data.prepared_dir to '
      'its parent, or prepare with --format=jpeg, whose copy can be read from the bucket.')


def open_raw(folder: str, num_examples: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """The memory-mapped images and the labels of a raw split, checked whole."""
  if storage.is_remote(folder):
    raise _raw_needs_a_local_disk(folder)
  path = os.path.join(folder, _RAW_IMAGES)
  expected_shape = (num_examples, size, size, 3)
  with open(path, 'rb') as f:
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                   np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(f)
    offset = f.tell()
  expected = offset + int(np.prod(expected_shape))
  actual = os.path.getsize(path)
  if tuple(shape) != expected_shape or dtype != np.uint8:
    raise ValueError(f'{path} holds {dtype} {tuple(shape)}, not uint8 {expected_shape} as its '
                     f'info.json says: {_PREPARE_AGAIN}')
  if actual != expected:
    raise ValueError(f'{path} is truncated ({actual:,} of {expected:,} bytes, about '
                     f'{max(0, actual - offset) // (3 * size * size):,} of {num_examples:,} '
                     f'images): {_PREPARE_AGAIN}')
  labels = np.load(os.path.join(folder, _RAW_LABELS))
  if labels.shape != (num_examples,):
    raise ValueError(f'{os.path.join(folder, _RAW_LABELS)} holds {labels.shape[0]} labels, not '
                     f'{num_examples}: {_PREPARE_AGAIN}')
  return np.load(path, mmap_mode='r'), labels.astype(np.int64)


# ----------------------------------------------------------------------------- reader


class PreparedSource(Source):
  """The prepared splits in `root` (`info`: split -> info.json); other splits (`unprepared`)
  come from `fallback`, the configured source (None once a folder's originals are gone)."""

  def __init__(self, root: str, info: dict, fallback: Source | None, unprepared=()):
    self._root, self._info, self._fallback = root, info, fallback
    self._unprepared = tuple(unprepared)
    first = next(iter(info.values()))
    self.class_names = fallback.class_names if fallback else first['class_names']
    self._raw = {}
    for split, split_info in info.items():
      if split_info.get('format', 'jpeg') == 'raw':
        self._raw[split] = open_raw(os.path.join(root, split), split_info['num_examples'],
                                    split_info['size'])

  def prepare(self):
    if self._fallback is not None and self._unprepared:  # Read from the source: built first.
      self._fallback.prepare()

  def identity(self, split):
    if split not in self._info:
      return self._fallback.identity(split)
    return DatasetIdentity.from_json(self._info[split]['dataset'])

  def num_examples(self, split):
    if split not in self._info:
      return self._fallback.num_examples(split)
    return self._info[split]['num_examples']

  def _gather(self, split, index: tf.Tensor) -> tf.Tensor:
    """Images `index` (a scalar or a vector) of a raw split, read from the memory map."""
    images = self._raw[split][0]
    out = tf.numpy_function(lambda i: np.asarray(images[i]), [index], tf.uint8, stateful=False)
    out.set_shape(index.shape.concatenate(images.shape[1:]))
    return out

  def records(self, split, process_index, process_count, order_seed=None):
    if split not in self._info:
      return self._fallback.records(split, process_index, process_count, order_seed)
    start, end = even_share(self.num_examples(split), process_index, process_count)
    if split in self._raw:
      labels = tf.constant(self._raw[split][1])
      # One memory-map gather per 64 images: a Python call per image costs more.
      ds = tf.data.Dataset.range(start, end).batch(64)
      return ds.map(lambda i: (self._gather(split, i), tf.gather(labels, i))).unbatch()
    files = sorted(tf.io.gfile.glob(os.path.join(self._root, split, '*.tfrecord')))
    ds = tf.data.TFRecordDataset(files).skip(start).take(end - start)
    spec = {'image': tf.io.FixedLenFeature([], tf.string),
            'label': tf.io.FixedLenFeature([], tf.int64)}
    return ds.map(lambda r: (lambda ex: (ex['image'], ex['label']))(
        tf.io.parse_single_example(r, spec)))

  def epoch_records(self, split, process_index, process_count, **kw):
    if split not in self._info:
      return self._fallback.epoch_records(split, process_index, process_count, **kw)
    if split not in self._raw:
      return super().epoch_records(split, process_index, process_count, **kw)
    # Random access is free: a full permutation of the share each epoch, no buffer. The
    # index in the (shuffled once) file names the example on any number of processes.
    start, end = even_share(self.num_examples(split), process_index, process_count)
    labels = tf.constant(self._raw[split][1])
    order = start + tf.random.experimental.stateless_shuffle(
        tf.range(end - start, dtype=tf.int64), seed=epoch_seed(kw['seed'], kw['epoch']))
    return tf.data.Dataset.from_tensor_slices(order).map(lambda i: (i, i, labels[i]))

  def load(self, split, payload):
    if split not in self._info:
      return self._fallback.load(split, payload)
    return self._gather(split, payload) if split in self._raw else payload

  def loads_batches(self, split):
    return split in self._raw

  def stored_image(self, split, loaded, size):
    if split not in self._info:
      return self._fallback.stored_image(split, loaded, size)
    if split in self._raw:
      return tf.cast(loaded, tf.float32)
    return decode.decode_stored(loaded, size)

  def stored_uint8(self, split, loaded, size):
    if split not in self._info:
      return self._fallback.stored_uint8(split, loaded, size)
    return loaded if split in self._raw else decode.decode_stored_uint8(loaded, size)


# ----------------------------------------------------------------------------- writer


def write_split(source: Source, split: str, out: str, *, size: int, store_format: str = 'jpeg',
                order_seed: int | None = None, jpeg_quality: int = 90,
                examples_per_shard: int = 1024) -> int:
  """Writes `split` of `source` at size x size into the folder `out`; returns the count.

  info.json is removed first and written last, so a copy cut short is never read.
  """
  if store_format not in STORE_FORMATS:
    raise ValueError(f'Unknown store format {store_format!r}; choose one of {STORE_FORMATS}.')
  if store_format == 'raw' and storage.is_remote(out):
    raise _raw_needs_a_local_disk(out)
  identity = source.identity(split)
  tf.io.gfile.makedirs(out)
  if tf.io.gfile.exists(os.path.join(out, 'info.json')):
    tf.io.gfile.remove(os.path.join(out, 'info.json'))  # Incomplete until rewritten.

  def stored(loaded, label):
    image = decode.to_uint8(source.stored_image(split, loaded, size))
    if store_format == 'jpeg':
      image = tf.io.encode_jpeg(image, quality=jpeg_quality)
    return image, label

  ds = source.records(split, 0, 1, order_seed=order_seed).map(
      stored, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(64)
  writer = _write_raw if store_format == 'raw' else _write_jpeg
  with Batches(ds.as_numpy_iterator()) as examples:
    n = writer(examples, out, split=split, size=size, num_examples=source.num_examples(split),
               examples_per_shard=examples_per_shard)
  with tf.io.gfile.GFile(os.path.join(out, 'info.json'), 'w') as f:
    json.dump({'num_examples': n, 'class_names': source.class_names, 'size': size,
               'format': store_format, 'dataset': identity.to_json()}, f)
  logging.info('Wrote %d images of %s to %s (%s)', n, split, out, store_format)
  return n


def _write_jpeg(examples, out, *, split, examples_per_shard, **_):
  n, writer = 0, None
  for jpeg, label in examples:
    if n % examples_per_shard == 0:
      if writer:
        writer.close()
      writer = tf.io.TFRecordWriter(
          os.path.join(out, f'data-{n // examples_per_shard:05d}.tfrecord'))
    example = tf.train.Example(features=tf.train.Features(feature={
        'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
    writer.write(example.SerializeToString())
    n += 1
    if n % 10_000 == 0:
      logging.info('prepare %s: %d images', split, n)
  if writer:
    writer.close()
  return n


def _write_raw(examples, out, *, split, size, num_examples, **_):
  tmp = os.path.join(out, _RAW_IMAGES + '.tmp')
  images = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8,
                                     shape=(num_examples, size, size, 3))
  labels = np.zeros([num_examples], np.int64)
  n = 0
  for image, label in examples:
    images[n], labels[n] = image, label
    n += 1
    if n % 10_000 == 0:
      logging.info('prepare %s: %d images', split, n)
  if n != num_examples:
    del images
    os.remove(tmp)
    raise ValueError(f'{split}: the source gave {n} images, not the {num_examples} it '
                     'announced; nothing was written.')
  images.flush()
  del images
  os.replace(tmp, os.path.join(out, _RAW_IMAGES))
  np.save(os.path.join(out, _RAW_LABELS), labels)
  return n

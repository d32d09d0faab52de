"""'folder': <folder>/<split>/<class>/<image>; classes from the train split's sub-folders.

The folder may be local or on an object store (gs://...): it is listed and read through
`tf.io.gfile`, which TensorFlow also reads the images with. On an object store each file's
size is one request when the folder is first listed; for ImageNet-sized folders there,
read a prepared copy (`python -m alexnet_jax.data.prepare`) instead.
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_jax import storage
from alexnet_jax.data import decode
from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data.sources.base import BadImageError, Source, data_dir, epoch_seed, even_share

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def _where(folder: str) -> str:
  """A folder as the identity and file names record it: absolute, or the URI itself."""
  return str(storage.path(folder))


def _listdir(folder: str) -> list[str]:
  """Names in `folder` (an object store lists sub-folders with a trailing slash)."""
  return [name.rstrip('/') for name in tf.io.gfile.listdir(folder)]


class FolderSource(Source):
  """<root>/<split>/<class>/<image>; split 'validation' falls back to 'val'.

  The files are listed in sorted order; a seeded permutation of that list, the same on
  every process, is cut into the process shares, so every share and every batch spans all
  classes. Each epoch then permutes the share anew: a full shuffle of file names, which
  costs no more than reading them in order.
  """

  def __init__(self, spec):
    if not spec.folder or not tf.io.gfile.isdir(spec.folder):
      raise ValueError(f"source='folder' needs config.data.folder to be a directory; got "
                       f'{spec.folder!r}.')
    self._spec = spec
    train_dir = self._split_dir(spec.train_split)
    self.class_names = sorted(
        d for d in _listdir(train_dir) if tf.io.gfile.isdir(os.path.join(train_dir, d)))
    self._listings = {}
    self._files = {}
    self.skipped = {}
    self._listing(spec.train_split)  # Empty class folders fail here, at once.

  @classmethod
  def from_spec(cls, spec):
    return cls(spec)

  @classmethod
  def location_key(cls, spec):
    """`folder-<basename>-<hash of its absolute path>`, so two folders never share files."""
    folder = _where(spec.folder or '')
    digest = hashlib.sha1(folder.encode()).hexdigest()[:10]
    return f'folder-{os.path.basename(folder.rstrip("/")) or "root"}-{digest}'

  @staticmethod
  def signature(spec) -> tuple:
    """Modification times of the folder's split and class directories: they change when
    files are added, removed or renamed, so a cached listing is not reused after that. An
    object store keeps no such times: its listing is read once per process."""
    if not spec.folder or storage.is_remote(spec.folder) or not os.path.isdir(spec.folder):
      return ()
    signature = []
    for entry in sorted(os.scandir(spec.folder), key=lambda e: e.name):
      if entry.is_dir():
        signature.append((entry.name, entry.stat().st_mtime_ns))
        signature += [(f'{entry.name}/{e.name}', e.stat().st_mtime_ns)
                      for e in os.scandir(entry.path) if e.is_dir()]
    return tuple(sorted(signature))

  def _split_dir(self, split):
    for name in (split, 'val') if split == 'validation' else (split,):
      path = os.path.join(_where(self._spec.folder), name)
      if tf.io.gfile.isdir(path):
        return path
    raise ValueError(f'No folder {os.path.join(self._spec.folder, split)} (split {split!r}).')

  def _listing(self, split):
    """Sorted (path, size, label) of a split's image files."""
    if split in self._listings:
      return self._listings[split]
    split_dir = self._split_dir(split)
    class_index = {name: i for i, name in enumerate(self.class_names)}
    files = []
    for class_name in sorted(_listdir(split_dir)):
      class_dir = os.path.join(split_dir, class_name)
      if not tf.io.gfile.isdir(class_dir):
        continue
      names = sorted(n for n in _listdir(class_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
      if not names and split == self._spec.train_split:
        # It would be a class no example can teach (torchvision's ImageFolder refuses too).
        raise BadImageError(
            f'Class folder {class_dir} has no image files ({", ".join(IMAGE_EXTENSIONS)}); '
            'add images or remove the folder.')
      for name in names:
        path = os.path.join(class_dir, name)
        if class_name not in class_index:
          raise BadImageError(
              f'{path}: class {class_name!r} is not one of the {len(class_index)} classes '
              f'of the train split (label outside the class range).')
        files.append((path, tf.io.gfile.stat(path).length, class_index[class_name]))
    self._listings[split] = files
    return files

  def identity(self, split):
    split_dir = self._split_dir(split)
    digest = hashlib.sha1()
    for path, size, _ in self._listing(split):
      digest.update(f'{path[len(split_dir) + 1:]}\0{size}\n'.encode())
    return DatasetIdentity('folder', split_dir, split, digest.hexdigest(),
                           len(self._listing(split)))

  def _labelled_files(self, split):
    """Sorted (path, label) of a split, bad files checked once and cached."""
    if split in self._files:
      return self._files[split]
    files = [(p, l) for p, _, l in self._listing(split)]
    bad = self._undecodable([p for p, _ in files])
    if bad and not self._spec.skip_bad_files:
      raise BadImageError(
          f'Cannot decode image file {bad[0]}' + (f' (and {len(bad) - 1} more)' if
                                                  len(bad) > 1 else '') +
          '; remove it or set config.data.skip_bad_files=True.')
    if bad:
      logging.warning('Skipped %d undecodable files in %s: %s', len(bad), self._split_dir(split),
                      ', '.join(bad[:20]))
    bad = set(bad)
    self._files[split] = [(p, l) for p, l in files if p not in bad]
    self.skipped[split] = sorted(bad)
    return self._files[split]

  def _undecodable(self, paths):
    """Paths that do not decode; the answer is cached under data_dir by file list."""
    key = hashlib.sha1()
    for p in paths:
      st = tf.io.gfile.stat(p)
      key.update(f'{p}\0{st.length}\0{st.mtime_nsec}\n'.encode())
    cache = os.path.join(data_dir(self._spec), 'alexnet_jax_checks',
                         f'folder-{key.hexdigest()}.json')
    if tf.io.gfile.exists(cache):
      with tf.io.gfile.GFile(cache) as f:
        return json.load(f)
    # A decode error stops a tf.data stream without saying which file; a parallel pass
    # that drops failures tells them apart.
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string) if paths else
                                            tf.zeros([0], tf.string))
    ds = ds.map(lambda p: (p, tf.shape(decode.decode(tf.io.read_file(p)))),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    good = {p.decode() for p, _ in ds.as_numpy_iterator()}
    bad = [p for p in paths if p not in good]
    tf.io.gfile.makedirs(os.path.dirname(cache))
    storage.write_whole(cache, json.dumps(bad))
    return bad

  def num_examples(self, split):
    return len(self._labelled_files(split))

  def _share(self, split, process_index, process_count, order_seed):
    """(index in the sorted list, path, label) of this process's share, as tensors."""
    files = self._labelled_files(split)
    order = np.arange(len(files))
    if order_seed is not None:
      order = np.random.default_rng(order_seed).permutation(len(files))
    start, end = even_share(len(files), process_index, process_count)
    order = order[start:end]
    # `[x] or [...]`, then slicing back: tf.constant cannot infer the type of [].
    index = tf.constant(order if len(order) else [0], tf.int64)[:len(order)]
    paths = tf.constant([files[i][0] for i in order] or [''], tf.string)[:len(order)]
    labels = tf.constant([files[i][1] for i in order] or [0], tf.int64)[:len(order)]
    return index, paths, labels

  def records(self, split, process_index, process_count, order_seed=None):
    _, paths, labels = self._share(split, process_index, process_count, order_seed)
    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda p, l: (tf.io.read_file(p), l))

  def epoch_records(self, split, process_index, process_count, *, seed, epoch, buffer):
    del buffer  # A full permutation of the share each epoch.
    index, paths, labels = self._share(split, process_index, process_count, seed)
    order = tf.random.experimental.stateless_shuffle(
        tf.range(tf.size(index, out_type=tf.int64)), seed=epoch_seed(seed, epoch))
    # The index in the sorted list names the example on any number of processes.
    return tf.data.Dataset.from_tensor_slices(order).map(
        lambda j: (index[j], paths[j], labels[j]))

  def load(self, split, payload):
    del split
    return tf.io.read_file(payload)

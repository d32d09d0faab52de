"""The tf.data input pipeline: sources, Sec. 2 preprocessing, Sec. 4.1 augmentation, batching.

Every source (`config.data.source`) is reduced to one thing: a tf.data stream of
*undecoded* examples `(encoded image bytes, label)` in a fixed order. Shuffling, per-host
sharding and resume-skipping all happen on that stream, before any JPEG is decoded, so a
resumed run skips steps cheaply and sees exactly the batches an uninterrupted one would.

Sources:
  'imagenet2012'  TFDS, manual download: ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
                  in `config.data.manual_dir`.
  'imagenette'    TFDS (downloaded by TFDS where a network exists).
  'folder'        `config.data.folder`/<split>/<class name>/<image>, split = train_split /
                  eval_split ('validation' falls back to 'val'); classes = sorted sub-folders
                  of the train split. Training reads the files in a seeded random order,
                  permuted anew each epoch (a sorted listing through a shuffle buffer would
                  give batches of a few neighbouring classes).
  'demo'          the synthetic offline dataset of `alexnet_jax.demo_dataset`.
If `python -m alexnet_jax.prepare` has written a 256x256 copy of a split (see `prepared_dir`)
from exactly the configured data, that copy is read instead of the source.

Images given to the model are on the 0-255 scale minus the per-pixel training-set mean image
(Sec. 2), which is subtracted from the 256x256 image before cropping, so each crop loses the
mean of its own window (`config.data.mean_patch='center'` subtracts the mean image's centre
crop from every crop instead, as the original code does). The mean image and the RGB
eigen-decomposition are computed from the training split on first use and kept in a file
keyed by the dataset (see `load_stats`).

Ten-view order (`views='ten'`): top-left, top-right, bottom-left, bottom-right and centre
crops, then the horizontal reflections of those five in the same order.
"""

import dataclasses
import hashlib
import json
import os
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow as tf

# TF is only the input pipeline here: keep it off every accelerator so it never takes the
# memory JAX needs.
tf.config.set_visible_devices([], 'GPU')
try:
  tf.config.set_visible_devices([], 'TPU')
except (ValueError, RuntimeError):  # No TPU device type registered in this TF build.
  pass

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

# Sec. 2's mean image reduced to ImageNet's usual per-channel mean on the 0-255 scale, used
# (broadcast to 256x256) only with config.data.statistics='imagenet' (README, Data).
IMAGENET_RGB_MEAN = np.array([123.68, 116.78, 103.94], np.float32)
# Sec. 4.1: the widely used ImageNet RGB eigen-decomposition on the [0, 1] scale;
# columns of IMAGENET_EIGVEC are the eigenvectors.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)
# The released code's variant (cuda-convnet2): standard deviations on the 0-255 scale and their
# eigenvectors (columns). It then multiplies the whole centred image plus that shift by
# 1 / (1 + lighting_std), 1/1.1 (see `augment`).
ORIGINAL_STDDEV = np.array([121.78, 37.09, 19.72], np.float32)
ORIGINAL_EIGVEC = np.array([[-0.564, -0.576, -0.592],
                            [-0.713, -0.024, 0.701],
                            [0.418, -0.817, 0.397]], np.float32).T
# Where each crop's mean comes from (config.data.mean_patch): 'crop' = the crop's own
# window of the mean image (Sec. 2's per-pixel mean); 'center' = the mean image's central
# crop for every crop and view, reflections included (the original code).
MEAN_PATCHES = ('crop', 'center')

_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


class ManualDownloadError(ValueError):
  """The imagenet2012 tar files are not where `config.data.manual_dir` points."""


class BadImageError(ValueError):
  """A file of the 'folder' source cannot be decoded or has no valid label."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train: int
  num_eval: int
  class_names: list[str]


@dataclasses.dataclass(frozen=True)
class Stats:
  """What Sec. 2 and 4.1 need from the training set."""
  mean_image: np.ndarray  # [256, 256, 3] float32, 0-255 scale.
  eigval: np.ndarray  # [3] eigenvalues of the RGB covariance on the [0, 1] scale.
  eigvec: np.ndarray  # [3, 3] eigenvectors as columns.
  original_stddev: np.ndarray  # [3] 0-255 standard deviations ('original' lighting).
  original_eigvec: np.ndarray  # [3, 3] their eigenvectors as columns.


# ---------------------------------------------------------------------- dataset identity


@dataclasses.dataclass(frozen=True)
class DatasetIdentity:
  """Which data a derived file (statistics, prepared copy) was made from.

  A TFDS dataset is its builder's full name (name/config/version) and split. A folder is
  the split folder's absolute path plus a fingerprint of its image files (relative paths
  and sizes): a folder that gains, loses or changes files is another dataset.
  """
  source: str
  location: str  # TFDS full name, or the folder's absolute path.
  split: str
  fingerprint: str = ''  # Folder only.
  num_files: int = 0  # Folder only: for messages.

  def describe(self) -> str:
    if self.source != 'folder':
      return f'{self.location} split {self.split!r}'
    return f'folder {self.location} split {self.split!r} ({self.num_files} files)'

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str | None) -> 'DatasetIdentity | None':
    try:
      return cls(**json.loads(text))
    except (TypeError, ValueError):  # Written before identities were recorded.
      return None


# ----------------------------------------------------------------------------- locations


def _data_dir(data_cfg) -> str:
  return data_cfg.data_dir or tfds.core.constants.DATA_DIR


def _location_key(data_cfg) -> str:
  """A file-name-safe name of the configured dataset: `<tfds name>-<version>`, or
  `folder-<basename>-<hash of its absolute path>` (so two folders never share files)."""
  if data_cfg.source == 'folder':
    folder = os.path.abspath(data_cfg.folder or '')
    digest = hashlib.sha1(folder.encode()).hexdigest()[:10]
    return f'folder-{os.path.basename(folder.rstrip(os.sep)) or "root"}-{digest}'
  return _tfds_builder(data_cfg).info.full_name.replace('/', '-')


def stats_path(data_cfg) -> str:
  """`config.data.stats_file`, or <data_dir>/alexnet_jax_stats/<dataset>-<train split>.npz."""
  if data_cfg.stats_file:
    return data_cfg.stats_file
  return os.path.join(_data_dir(data_cfg), 'alexnet_jax_stats',
                      f'{_location_key(data_cfg)}-{data_cfg.train_split}.npz')


def prepared_dir(data_cfg) -> str:
  """`config.data.prepared_dir`, or <data_dir>/alexnet_jax_prepared/<dataset>.

  <dataset> is `<tfds name>-<version>` or `folder-<basename>-<hash of its path>`.
  `python -m alexnet_jax.prepare` writes <prepared_dir>/<split>/*.tfrecord and, last,
  <prepared_dir>/<split>/info.json with the identity of the data it was made from. A split
  is read from there (while `config.data.use_prepared` is True) only if that identity is
  the configured dataset's; otherwise the run stops and says to prepare it again.
  """
  if data_cfg.prepared_dir:
    return data_cfg.prepared_dir
  return os.path.join(_data_dir(data_cfg), 'alexnet_jax_prepared', _location_key(data_cfg))


# ------------------------------------------------------------------------------- sources


def _even_share(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of this process's contiguous share; sizes differ by at most one."""
  return n * process_index // process_count, n * (process_index + 1) // process_count


def _epoch_seed(seed: int, epoch) -> tf.Tensor:
  return tf.stack([tf.constant(seed, tf.int64) * 1_000_003, tf.cast(epoch, tf.int64)])


class _Source:
  """Undecoded examples of one dataset.

  `records` yields (encoded image, int64 label) in a fixed order; `epoch_records` yields
  one training epoch of (example index, payload, label) in shuffled order, where `load`
  turns a payload of `split` into the encoded image (a file read for folders), so that
  resuming skips examples before reading them.
  """

  class_names: list[str]

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


class _TfdsSource(_Source):
  """A TFDS builder with 'image' and 'label' features, built on first use."""

  def __init__(self, data_cfg, builder, prepare):
    self._source = data_cfg.source
    self._builder, self._prepare = builder, prepare
    self.class_names = list(builder.info.features['label'].names)

  def identity(self, split):
    return DatasetIdentity(self._source, self._builder.info.full_name, split)

  def _as_dataset(self, split):
    if self._prepare is not None:
      self._prepare()
      self._prepare = None
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


class _FolderSource(_Source):
  """<root>/<split>/<class>/<image>; classes from the train split's sub-folders.

  The files are listed in sorted order; a seeded permutation of that list, the same on
  every process, is cut into the process shares, so every share and every batch spans all
  classes. Each epoch then permutes the share anew: a full shuffle of file names, which
  costs no more than reading them in order.
  """

  def __init__(self, data_cfg):
    if not data_cfg.folder or not os.path.isdir(data_cfg.folder):
      raise ValueError(f"source='folder' needs config.data.folder to be a directory; got "
                       f'{data_cfg.folder!r}.')
    self._cfg = data_cfg
    train_dir = self._split_dir(data_cfg.train_split)
    self.class_names = sorted(
        d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    self._listings = {}
    self._files = {}
    self.skipped = {}
    self._listing(data_cfg.train_split)  # Empty class folders fail here, at once.

  def _split_dir(self, split):
    for name in (split, 'val') if split == 'validation' else (split,):
      path = os.path.join(self._cfg.folder, name)
      if os.path.isdir(path):
        return path
    raise ValueError(f'No folder {os.path.join(self._cfg.folder, split)} (split {split!r}).')

  def _listing(self, split):
    """Sorted (path, size, label) of a split's image files."""
    if split in self._listings:
      return self._listings[split]
    split_dir = self._split_dir(split)
    class_index = {name: i for i, name in enumerate(self.class_names)}
    files = []
    for class_name in sorted(os.listdir(split_dir)):
      class_dir = os.path.join(split_dir, class_name)
      if not os.path.isdir(class_dir):
        continue
      names = sorted(n for n in os.listdir(class_dir) if n.lower().endswith(_IMAGE_EXTENSIONS))
      if not names and split == self._cfg.train_split:
        # It would be a class no example can teach (torchvision's ImageFolder refuses too).
        raise BadImageError(
            f'Class folder {class_dir} has no image files ({", ".join(_IMAGE_EXTENSIONS)}); '
            'add images or remove the folder.')
      for name in names:
        path = os.path.join(class_dir, name)
        if class_name not in class_index:
          raise BadImageError(
              f'{path}: class {class_name!r} is not one of the {len(class_index)} classes '
              f'of the train split (label outside the class range).')
        files.append((path, os.stat(path).st_size, class_index[class_name]))
    self._listings[split] = files
    return files

  def identity(self, split):
    split_dir = self._split_dir(split)
    digest = hashlib.sha1()
    for path, size, _ in self._listing(split):
      digest.update(f'{os.path.relpath(path, split_dir)}\0{size}\n'.encode())
    return DatasetIdentity('folder', os.path.abspath(split_dir), split, digest.hexdigest(),
                           len(self._listing(split)))

  def _labelled_files(self, split):
    """Sorted (path, label) of a split, bad files checked once and cached."""
    if split in self._files:
      return self._files[split]
    files = [(p, l) for p, _, l in self._listing(split)]
    bad = self._undecodable([p for p, _ in files])
    if bad and not self._cfg.skip_bad_files:
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
      st = os.stat(p)
      key.update(f'{p}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    cache = os.path.join(_data_dir(self._cfg), 'alexnet_jax_checks',
                         f'folder-{key.hexdigest()}.json')
    if os.path.exists(cache):
      with open(cache) as f:
        return json.load(f)
    # A decode error stops a tf.data stream without saying which file; a parallel pass
    # that drops failures tells them apart.
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string) if paths else
                                            tf.zeros([0], tf.string))
    ds = ds.map(lambda p: (p, tf.shape(_decode(tf.io.read_file(p)))),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    good = {p.decode() for p, _ in ds.as_numpy_iterator()}
    bad = [p for p in paths if p not in good]
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, 'w') as f:
      json.dump(bad, f)
    return bad

  def num_examples(self, split):
    return len(self._labelled_files(split))

  def _share(self, split, process_index, process_count, order_seed):
    """(index in the sorted list, path, label) of this process's share, as tensors."""
    files = self._labelled_files(split)
    order = np.arange(len(files))
    if order_seed is not None:
      order = np.random.default_rng(order_seed).permutation(len(files))
    start, end = _even_share(len(files), process_index, process_count)
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
        tf.range(tf.size(index, out_type=tf.int64)), seed=_epoch_seed(seed, epoch))
    # The index in the sorted list names the example on any number of processes.
    return tf.data.Dataset.from_tensor_slices(order).map(
        lambda j: (index[j], paths[j], labels[j]))

  def load(self, split, payload):
    del split
    return tf.io.read_file(payload)


class _PreparedSource(_Source):
  """The 256x256 TFRecord copy written by `alexnet_jax.prepare` (one split per folder)."""

  def __init__(self, root, info, fallback):
    self._root, self._info, self._fallback = root, info, fallback
    first = next(iter(info.values()))
    self.class_names = fallback.class_names if fallback else first['class_names']

  def identity(self, split):
    if split not in self._info:
      return self._fallback.identity(split)
    return DatasetIdentity.from_json(self._info[split]['dataset'])

  def num_examples(self, split):
    if split not in self._info:
      return self._fallback.num_examples(split)
    return self._info[split]['num_examples']

  def records(self, split, process_index, process_count, order_seed=None):
    if split not in self._info:
      return self._fallback.records(split, process_index, process_count, order_seed)
    files = sorted(tf.io.gfile.glob(os.path.join(self._root, split, '*.tfrecord')))
    start, end = _even_share(self.num_examples(split), process_index, process_count)
    ds = tf.data.TFRecordDataset(files).skip(start).take(end - start)
    spec = {'image': tf.io.FixedLenFeature([], tf.string),
            'label': tf.io.FixedLenFeature([], tf.int64)}
    return ds.map(lambda r: (lambda ex: (ex['image'], ex['label']))(
        tf.io.parse_single_example(r, spec)))

  def epoch_records(self, split, process_index, process_count, **kw):
    if split not in self._info:
      return self._fallback.epoch_records(split, process_index, process_count, **kw)
    return super().epoch_records(split, process_index, process_count, **kw)

  def load(self, split, payload):
    if split not in self._info:
      return self._fallback.load(split, payload)
    return payload


def _tfds_builder(data_cfg):
  """The TFDS builder of a TFDS source, not yet prepared (cheap: names and versions)."""
  if data_cfg.source == 'demo':
    from alexnet_jax import demo_dataset  # pylint: disable=g-import-not-at-top
    return demo_dataset.DemoShapes(data_dir=data_cfg.data_dir)
  if data_cfg.source in ('imagenet2012', 'imagenette'):
    return tfds.builder(data_cfg.source, data_dir=data_cfg.data_dir)
  raise ValueError(f'Unknown config.data.source {data_cfg.source!r}; expected '
                   "'imagenet2012', 'imagenette', 'folder' or 'demo'.")


def _prepare_imagenet2012(builder, data_cfg):
  if builder.is_prepared():
    return
  manual_dir = data_cfg.manual_dir or os.path.join(_data_dir(data_cfg), 'downloads', 'manual')
  needed = ['ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar']
  missing = [f for f in needed if not os.path.exists(os.path.join(manual_dir, f))]
  try:
    # Tried even with files missing: under tfds.testing.mock_data it is a no-op.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception:  # pylint: disable=broad-except
    if not missing:
      raise
    # TFDS's own message is a multi-line traceback; say in one line what to do.
    raise ManualDownloadError(
        f"imagenet2012 needs {' and '.join(needed)} (from image-net.org) in {manual_dir}; "
        f"missing {', '.join(missing)}. Put them there or point config.data.manual_dir "
        'at the folder that holds them.') from None


def _base_source(data_cfg) -> _Source:
  if data_cfg.source == 'folder':
    return _FolderSource(data_cfg)
  builder = _tfds_builder(data_cfg)
  if data_cfg.source == 'imagenet2012':
    prepare = lambda: _prepare_imagenet2012(builder, data_cfg)
  else:
    prepare = builder.download_and_prepare
  return _TfdsSource(data_cfg, builder, prepare)


def _folder_signature(data_cfg) -> tuple:
  """Modification times of the folder's split and class directories: they change when
  files are added, removed or renamed, so a cached listing is not reused after that."""
  if data_cfg.source != 'folder' or not data_cfg.folder or not os.path.isdir(data_cfg.folder):
    return ()
  signature = []
  for entry in sorted(os.scandir(data_cfg.folder), key=lambda e: e.name):
    if entry.is_dir():
      signature.append((entry.name, entry.stat().st_mtime_ns))
      signature += [(f'{entry.name}/{e.name}', e.stat().st_mtime_ns)
                    for e in os.scandir(entry.path) if e.is_dir()]
  return tuple(sorted(signature))


def _read_prepared_info(root: str, split: str) -> dict | None:
  path = os.path.join(root, split, 'info.json')
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _check_prepared(info: dict, current: DatasetIdentity, path: str) -> None:
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
  raise ValueError(
      f'The prepared copy {path} was made from {was}, not from {current.describe()}: run '
      '`python -m alexnet_jax.prepare` with this config again, or set '
      '--config.data.use_prepared=False.')


_SOURCES = {}


def get_source(data_cfg, use_prepared: bool | None = None) -> _Source:
  """The source of `data_cfg`, reading the prepared copy of any split that has one.

  A prepared copy of other data (another folder, a folder that changed since, another
  TFDS version) stops the run with a one-line ValueError; it is never read.
  """
  if use_prepared is None:
    use_prepared = data_cfg.get('use_prepared', True)
  root = prepared_dir(data_cfg)
  splits = (data_cfg.train_split, data_cfg.eval_split)
  key = (data_cfg.source, data_cfg.data_dir, data_cfg.folder, data_cfg.manual_dir,
         data_cfg.skip_bad_files, splits, root, use_prepared, _folder_signature(data_cfg))
  if key not in _SOURCES:
    prepared = {s: _read_prepared_info(root, s) for s in splits} if use_prepared else {}
    prepared = {s: info for s, info in prepared.items() if info is not None}
    folder_gone = data_cfg.source == 'folder' and not (
        data_cfg.folder and os.path.isdir(data_cfg.folder))
    if folder_gone and len(prepared) == len(splits):
      # The originals were removed after `prepare`: the copy is all there is.
      base = None
      folder = os.path.abspath(data_cfg.folder or '')
      for s, info in prepared.items():
        made_from = DatasetIdentity.from_json(info.get('dataset'))
        if made_from is None or (made_from.split, os.path.dirname(made_from.location)) != (s, folder):
          raise ValueError(
              f'The prepared copy {os.path.join(root, s)} was not made from split {s!r} of '
              f'folder {folder}, which does not exist: set --config.data.folder to the images '
              'it was made from, or --config.data.prepared_dir to their prepared copy.')
      logging.info('Folder %s is gone: reading its prepared copy in %s.', data_cfg.folder, root)
    else:
      base = _base_source(data_cfg)
      for s, info in prepared.items():
        _check_prepared(info, base.identity(s), os.path.join(root, s))
    _SOURCES[key] = _PreparedSource(root, prepared, base) if prepared else base
  return _SOURCES[key]


def dataset_info(data_cfg) -> DatasetInfo:
  source = get_source(data_cfg)
  return DatasetInfo(num_classes=len(source.class_names),
                     num_train=source.num_examples(data_cfg.train_split),
                     num_eval=source.num_examples(data_cfg.eval_split),
                     class_names=list(source.class_names))


def steps_per_epoch(data_cfg, global_batch_size: int) -> int:
  return dataset_info(data_cfg).num_train // global_batch_size


# ------------------------------------------------------------------ Sec. 2 preprocessing


STATISTICS = ('train_split', 'imagenet')


def imagenet_stats(size: int) -> Stats:
  """ImageNet's per-channel mean (broadcast to size x size) and RGB eigen-decomposition."""
  return Stats(np.broadcast_to(IMAGENET_RGB_MEAN, (size, size, 3)).astype(np.float32),
               IMAGENET_EIGVAL, IMAGENET_EIGVEC, ORIGINAL_STDDEV, ORIGINAL_EIGVEC)


def _read_stats(data_cfg, path: str) -> Stats | None:
  """The statistics in `path` if they are this training split's; None if missing or stale."""
  if not tf.io.gfile.exists(path):
    return None
  current = get_source(data_cfg).identity(data_cfg.train_split)
  with tf.io.gfile.GFile(path, 'rb') as f, np.load(f) as z:
    made_from = DatasetIdentity.from_json(str(z['dataset'])) if 'dataset' in z else None
    mean_image = z['mean_image'].astype(np.float32)
    eigval = z['eigval'].astype(np.float32)
    eigvec = z['eigvec'].astype(np.float32)
  if made_from != current:
    if data_cfg.stats_file and made_from is not None:
      raise ValueError(
          f'config.data.stats_file {path} holds the statistics of {made_from.describe()}, not '
          f'of {current.describe()}: unset it to compute this dataset\'s own, or set '
          "--config.data.statistics=imagenet.")
    if not data_cfg.stats_file:
      logging.warning('%s was computed from %s, not %s: computing it again.', path,
                      made_from.describe() if made_from else 'unrecorded data',
                      current.describe())
      return None
    # A file given by hand without a record of its data: the user's choice, taken as is.
  size = data_cfg.stored_size
  if mean_image.shape != (size, size, 3):
    raise ValueError(f'{path}: mean image {mean_image.shape}, expected {(size, size, 3)}; '
                     'delete it to compute it again.')
  # The released code's standard deviations are those of the same covariance on 0-255.
  return Stats(mean_image, eigval, eigvec, 255.0 * np.sqrt(np.maximum(eigval, 0)), eigvec)


def load_stats(data_cfg) -> Stats:
  """The Sec. 2 mean image and Sec. 4.1 RGB eigen-decomposition, per `config.data.statistics`.

  'train_split' (the paper): the file at `stats_path`, if it was computed from this very
  training split; otherwise `alexnet_jax.stats` computes it now (one streaming pass over
  at most `config.data.stats_max_examples` images) and writes it there.
  'imagenet': ImageNet's per-channel mean and eigen-decomposition, no pass over the data.
  """
  if data_cfg.statistics == 'imagenet':
    return imagenet_stats(data_cfg.stored_size)
  if data_cfg.statistics != 'train_split':
    raise ValueError(f"config.data.statistics must be one of {STATISTICS}; got "
                     f'{data_cfg.statistics!r}.')
  path = stats_path(data_cfg)
  stats = _read_stats(data_cfg, path)
  if stats is None:
    # Computing statistics needs this module's sources; the import is deferred to here.
    from alexnet_jax import stats as stats_command  # pylint: disable=g-import-not-at-top
    stats_command.write_stats(data_cfg)
    stats = _read_stats(data_cfg, path)
  return stats


def _decode(encoded: tf.Tensor) -> tf.Tensor:
  """Any JPEG/PNG/BMP/GIF as uint8 [h, w, 3]."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Sec. 2: shorter side to `size`, then the central size x size patch; float32 0-255."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]

  def resize():
    scale = tf.cast(size, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
    # Antialiased bilinear: shrinking widens the triangle filter to the scale, so no
    # aliasing; exact on linear content away from the borders. (tf's 'area' is 2x
    # cheaper but off by up to 5% of a step at non-integer scales; `prepare` makes the
    # cost a one-off anyway.)
    return tf.image.resize(image, [new_h, new_w], method='bilinear', antialias=True)

  # Images already stored at the right shorter side (prepared data) skip the resample.
  image = tf.cond(tf.minimum(h, w) == size, lambda: tf.cast(image, tf.float32), resize)
  shape = tf.shape(image)
  top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
  return image[top:top + size, left:left + size, :]


def decode_stored(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """Encoded image -> the stored size x size float32 image of Sec. 2 (mean not removed)."""
  image = _decode(encoded)
  image.set_shape([None, None, 3])
  image = resize_and_center_crop(image, size)
  image.set_shape([size, size, 3])
  return image


# --------------------------------------------------------------- Sec. 4.1 augmentation


def lighting_shift(alpha: tf.Tensor, stats: Stats, lighting: str) -> tf.Tensor:
  """The RGB shift [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T on the 0-255 scale.

  alpha: [..., 3] draws of a_i ~ N(0, lighting_std).
  'paper': eigen-decomposition on [0, 1], the shift times 255.
  'original': the released code, a_i times 0-255 standard deviations. `augment` then
    divides the whole centred image plus this shift by 1 + lighting_std, as that code does.
  """
  alpha = tf.convert_to_tensor(alpha, tf.float32)
  if lighting == 'paper':
    return 255.0 * tf.linalg.matvec(tf.constant(stats.eigvec), alpha * stats.eigval)
  if lighting == 'original':
    return tf.linalg.matvec(tf.constant(stats.original_eigvec), alpha * stats.original_stddev)
  if lighting == 'none':
    return tf.zeros_like(alpha)
  raise ValueError(f"config.data.lighting must be 'paper', 'original' or 'none'; got "
                   f'{lighting!r}.')


def _example_seed(seed: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Stateless seed of one use of one example: (seed, epoch, example index)."""
  s = tf.constant([seed, 0x5EED], tf.int64)
  s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_fold_in(s, tf.cast(index, tf.int64))


def augment(encoded, label, epoch, index, *, data_cfg, stats: Stats, seed: int):
  """One training example: Sec. 2 preprocessing then Sec. 4.1 crop, reflection, lighting."""
  size, crop = data_cfg.stored_size, data_cfg.crop_size
  crop_seed, flip_seed, light_seed = tf.unstack(
      tf.random.experimental.stateless_split(_example_seed(seed, epoch, index), 3))
  # Uniform over all (size - crop + 1)^2 offsets (33 x 33 for 224 of 256).
  offset = tf.random.stateless_uniform([2], crop_seed, minval=0, maxval=size - crop + 1,
                                       dtype=tf.int32)
  image = decode_stored(encoded, size)
  window = lambda x: tf.slice(x, [offset[0], offset[1], 0], [crop, crop, 3])
  mean_patch = _mean_patch(data_cfg)
  if mean_patch == 'crop':
    # Mean removed before cropping: the crop loses the mean of its own window.
    image = window(image) - window(tf.constant(stats.mean_image))
  else:
    image = window(image)
  if data_cfg.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  if mean_patch == 'center':
    # The original code crops and reflects, then subtracts the mean image's centre crop.
    image = image - tf.constant(center_patch(stats.mean_image, crop))
  if data_cfg.lighting != 'none' and data_cfg.lighting_std > 0:
    alpha = tf.random.stateless_normal([3], light_seed, stddev=data_cfg.lighting_std)
    image = image + lighting_shift(alpha, stats, data_cfg.lighting)
    if data_cfg.lighting == 'original':
      # The released code (cuda-convnet2 convdata.py) scales the centred image plus the noise
      # by 1 / (1 + color_noise), 1/1.1, "so that the overall scale of the training data
      # doesn't become too different from the test data"; test images are not scaled.
      image = image / (1.0 + data_cfg.lighting_std)
  return {'images': image * data_cfg.input_scale, 'labels': tf.cast(label, tf.int32)}


def _mean_patch(data_cfg) -> str:
  mean_patch = data_cfg.get('mean_patch', 'crop')
  if mean_patch not in MEAN_PATCHES:
    raise ValueError(f'config.data.mean_patch must be one of {MEAN_PATCHES}; got '
                     f'{mean_patch!r}.')
  return mean_patch


def center_patch(mean_image: np.ndarray, crop: int) -> np.ndarray:
  """The central crop x crop window of the mean image (offset (size - crop) // 2)."""
  top = (mean_image.shape[0] - crop) // 2
  left = (mean_image.shape[1] - crop) // 2
  return np.asarray(mean_image[top:top + crop, left:left + crop], np.float32)


def eval_views(image: tf.Tensor, crop: int, views: str) -> tf.Tensor:
  """[V, crop, crop, 3] views of a (mean-subtracted) square image; order in module doc."""
  size = image.shape[0]
  far, mid = size - crop, (size - crop) // 2
  window = lambda t, l: image[t:t + crop, l:l + crop, :]
  if views == 'center':
    return window(mid, mid)[None]
  if views == 'ten':
    five = tf.stack([window(0, 0), window(0, far), window(far, 0), window(far, far),
                     window(mid, mid)])
    return tf.concat([five, tf.reverse(five, [2])], axis=0)
  raise ValueError(f"views must be 'center' or 'ten'; got {views!r}.")


# -------------------------------------------------------------------------------- batches


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


def train_batches(data_cfg, *, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite training batches {'images': [B, crop, crop, 3] f32, 'labels': [B] i32}.

  B = global_batch_size // process_count. Batch s is the same whatever `start_step` is:
  epoch e = s // steps_per_epoch shuffles this process's share with a seed from (seed, e)
  (folders: a full permutation; other sources: a shuffle buffer), the first `start_step`
  batches are skipped before decoding, and every random choice is seeded from (seed,
  epoch, example index).
  """
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by '
                     f'process_count {process_count}.')
  local_batch = global_batch_size // process_count
  source = get_source(data_cfg)
  steps = source.num_examples(data_cfg.train_split) // global_batch_size
  if steps == 0:
    raise ValueError(f'Training split has fewer examples than one batch of '
                     f'{global_batch_size}.')
  stats = load_stats(data_cfg)
  start_epoch, skip_steps = divmod(start_step, steps)
  split, buffer = data_cfg.train_split, max(1, data_cfg.shuffle_buffer)

  def epoch(e):
    ds = source.epoch_records(split, process_index, process_count, seed=seed, epoch=e,
                              buffer=buffer)
    ds = ds.take(steps * local_batch)
    ds = ds.skip(tf.where(e == start_epoch, tf.constant(skip_steps * local_batch, tf.int64),
                             tf.constant(0, tf.int64)))
    return ds.map(lambda i, payload, label: (source.load(split, payload), label, e, i))

  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.map(lambda enc, label, e, i: augment(enc, label, e, i, data_cfg=data_cfg,
                                               stats=stats, seed=seed),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.prefetch(data_cfg.prefetch_batches).with_options(_options())
  return ds.as_numpy_iterator()


def eval_batches(data_cfg, *, global_batch_size: int, views: str, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Finite eval batches {'images': [B, V, crop, crop, 3], 'labels': [B], 'mask': [B]}.

  Every process yields ceil(ceil(num_eval / process_count) / B) batches; padding examples
  have mask False, so over all processes each eval example has mask True exactly once.
  """
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by '
                     f'process_count {process_count}.')
  local_batch = global_batch_size // process_count
  source = get_source(data_cfg)
  stats = load_stats(data_cfg)
  size, crop = data_cfg.stored_size, data_cfg.crop_size
  n = source.num_examples(data_cfg.eval_split)
  max_local = -(-n // process_count)
  num_batches = -(-max_local // local_batch)
  if _mean_patch(data_cfg) == 'crop':  # Each view minus its own window of the mean image.
    mean_image, view_mean = tf.constant(stats.mean_image), tf.zeros([crop, crop, 3])
  else:  # The original code: every view minus the mean image's centre crop.
    mean_image, view_mean = tf.zeros([size, size, 3]), tf.constant(center_patch(stats.mean_image, crop))

  @tf.autograph.experimental.do_not_convert  # Plain TF ops; AutoGraph only warns here.
  def preprocess(encoded, label):
    image = decode_stored(encoded, size) - mean_image
    image = (eval_views(image, crop, views) - view_mean) * data_cfg.input_scale
    return {'images': image, 'labels': tf.cast(label, tf.int32), 'mask': tf.constant(True)}

  ds = source.records(data_cfg.eval_split, process_index, process_count)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  num_views = 1 if views == 'center' else 10
  padding = tf.data.Dataset.from_tensors(
      {'images': tf.zeros([num_views, crop, crop, 3]), 'labels': tf.constant(0),
       'mask': tf.constant(False)}).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch)
  ds = ds.batch(local_batch).prefetch(data_cfg.prefetch_batches).with_options(_options())
  return ds.as_numpy_iterator()

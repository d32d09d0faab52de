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
                  of the train split.
  'demo'          the synthetic offline dataset of `alexnet_jax.demo_dataset`.
If `python -m alexnet_jax.prepare` has written a 256x256 copy of a split (see `prepared_dir`),
that copy is read instead of the source.

Images given to the model are on the 0-255 scale minus the per-pixel training-set mean image
(Sec. 2), which is subtracted from the 256x256 image before cropping, so each crop loses the
mean of its own window. The mean image and the RGB eigen-decomposition come from the file
written by `python -m alexnet_jax.stats` (see `stats_path`), or ImageNet constants until then.

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

# Sec. 2 / SPEC.md: per-channel ImageNet mean on the 0-255 scale, used (broadcast to
# 256x256) until a stats file exists.
IMAGENET_RGB_MEAN = np.array([123.68, 116.78, 103.94], np.float32)
# Sec. 4.1 / SPEC.md: the widely used ImageNet RGB eigen-decomposition on the [0, 1] scale;
# columns of IMAGENET_EIGVEC are the eigenvectors.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)
# The released code's variant (SPEC.md): standard deviations on the 0-255 scale and their
# eigenvectors (columns), the shift divided by 1.1.
ORIGINAL_STDDEV = np.array([121.78, 37.09, 19.72], np.float32)
ORIGINAL_EIGVEC = np.array([[-0.564, -0.576, -0.592],
                            [-0.713, -0.024, 0.701],
                            [0.418, -0.817, 0.397]], np.float32).T
ORIGINAL_DIVISOR = 1.1

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


# ----------------------------------------------------------------------------- locations


def _data_dir(data_cfg) -> str:
  return data_cfg.data_dir or tfds.core.constants.DATA_DIR


def stats_path(data_cfg) -> str:
  """`config.data.stats_file`, or <data_dir>/alexnet_jax_stats/<source>.npz."""
  if data_cfg.stats_file:
    return data_cfg.stats_file
  return os.path.join(_data_dir(data_cfg), 'alexnet_jax_stats', f'{data_cfg.source}.npz')


def prepared_dir(data_cfg) -> str:
  """`config.data.prepared_dir`, or <data_dir>/alexnet_jax_prepared/<source>.

  `python -m alexnet_jax.prepare` writes <prepared_dir>/<split>/*.tfrecord and, last,
  <prepared_dir>/<split>/info.json; a split is read from there once info.json exists
  (and `config.data.use_prepared` is True).
  """
  if data_cfg.prepared_dir:
    return data_cfg.prepared_dir
  return os.path.join(_data_dir(data_cfg), 'alexnet_jax_prepared', data_cfg.source)


# ------------------------------------------------------------------------------- sources


def _even_share(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of this process's contiguous share; sizes differ by at most one."""
  return n * process_index // process_count, n * (process_index + 1) // process_count


class _Source:
  """Undecoded examples of one dataset: `records` yields (encoded image, int64 label)."""

  class_names: list[str]

  def num_examples(self, split: str) -> int:
    raise NotImplementedError

  def records(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
    raise NotImplementedError


class _TfdsSource(_Source):
  """A TFDS builder with 'image' and 'label' features."""

  def __init__(self, builder):
    self._builder = builder
    self.class_names = list(builder.info.features['label'].names)

  def _as_dataset(self, split):
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

  def records(self, split, process_index, process_count):
    share = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count)
    return self._as_dataset(share).map(
        lambda ex: (ex['image'], tf.cast(ex['label'], tf.int64)))


class _FolderSource(_Source):
  """<root>/<split>/<class>/<image>; classes from the train split's sub-folders."""

  def __init__(self, data_cfg):
    if not data_cfg.folder or not os.path.isdir(data_cfg.folder):
      raise ValueError(f"source='folder' needs config.data.folder to be a directory; got "
                       f'{data_cfg.folder!r}.')
    self._cfg = data_cfg
    train_dir = self._split_dir(data_cfg.train_split)
    self.class_names = sorted(
        d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    self._files = {}

  def _split_dir(self, split):
    for name in (split, 'val') if split == 'validation' else (split,):
      path = os.path.join(self._cfg.folder, name)
      if os.path.isdir(path):
        return path
    raise ValueError(f'No folder {os.path.join(self._cfg.folder, split)} (split {split!r}).')

  def _labelled_files(self, split):
    """Sorted (path, label) of a split, bad files checked once and cached."""
    if split in self._files:
      return self._files[split]
    split_dir = self._split_dir(split)
    class_index = {name: i for i, name in enumerate(self.class_names)}
    files = []
    for class_name in sorted(os.listdir(split_dir)):
      class_dir = os.path.join(split_dir, class_name)
      if not os.path.isdir(class_dir):
        continue
      for name in sorted(os.listdir(class_dir)):
        if not name.lower().endswith(_IMAGE_EXTENSIONS):
          continue
        path = os.path.join(class_dir, name)
        if class_name not in class_index:
          raise BadImageError(
              f'{path}: class {class_name!r} is not one of the {len(class_index)} classes '
              f'of the train split (label outside the class range).')
        files.append((path, class_index[class_name]))
    bad = self._undecodable([p for p, _ in files])
    if bad and not self._cfg.skip_bad_files:
      raise BadImageError(
          f'Cannot decode image file {bad[0]}' + (f' (and {len(bad) - 1} more)' if
                                                  len(bad) > 1 else '') +
          '; remove it or set config.data.skip_bad_files=True.')
    if bad:
      logging.warning('Skipped %d undecodable files in %s: %s', len(bad), split_dir,
                      ', '.join(bad[:20]))
    bad = set(bad)
    self._files[split] = [(p, l) for p, l in files if p not in bad]
    self.skipped = getattr(self, 'skipped', {})
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

  def records(self, split, process_index, process_count):
    files = self._labelled_files(split)
    start, end = _even_share(len(files), process_index, process_count)
    files = files[start:end]
    paths = tf.constant([p for p, _ in files] or [''], tf.string)[:len(files)]
    labels = tf.constant([l for _, l in files] or [0], tf.int64)[:len(files)]
    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda p, l: (tf.io.read_file(p), l))


class _PreparedSource(_Source):
  """The 256x256 TFRecord copy written by `alexnet_jax.prepare` (one split per folder)."""

  def __init__(self, root, splits, fallback):
    self._root, self._splits, self._fallback = root, splits, fallback
    self._info = {}
    for s in splits:
      with open(os.path.join(root, s, 'info.json')) as f:
        self._info[s] = json.load(f)
    self.class_names = (fallback.class_names if fallback else
                        self._info[splits[0]]['class_names'])

  def num_examples(self, split):
    if split not in self._info:
      return self._fallback.num_examples(split)
    return self._info[split]['num_examples']

  def records(self, split, process_index, process_count):
    if split not in self._info:
      return self._fallback.records(split, process_index, process_count)
    files = sorted(tf.io.gfile.glob(os.path.join(self._root, split, '*.tfrecord')))
    start, end = _even_share(self.num_examples(split), process_index, process_count)
    ds = tf.data.TFRecordDataset(files).skip(start).take(end - start)
    spec = {'image': tf.io.FixedLenFeature([], tf.string),
            'label': tf.io.FixedLenFeature([], tf.int64)}
    return ds.map(lambda r: (lambda ex: (ex['image'], ex['label']))(
        tf.io.parse_single_example(r, spec)))


def _imagenet2012_builder(data_cfg):
  builder = tfds.builder('imagenet2012', data_dir=data_cfg.data_dir)
  if not builder.is_prepared():
    manual_dir = data_cfg.manual_dir or os.path.join(_data_dir(data_cfg), 'downloads',
                                                     'manual')
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
  return builder


def _base_source(data_cfg) -> _Source:
  if data_cfg.source == 'imagenet2012':
    return _TfdsSource(_imagenet2012_builder(data_cfg))
  if data_cfg.source == 'imagenette':
    builder = tfds.builder('imagenette', data_dir=data_cfg.data_dir)
    builder.download_and_prepare()
    return _TfdsSource(builder)
  if data_cfg.source == 'demo':
    from alexnet_jax import demo_dataset  # pylint: disable=g-import-not-at-top
    builder = demo_dataset.DemoShapes(data_dir=data_cfg.data_dir)
    builder.download_and_prepare()
    return _TfdsSource(builder)
  if data_cfg.source == 'folder':
    return _FolderSource(data_cfg)
  raise ValueError(f'Unknown config.data.source {data_cfg.source!r}; expected '
                   "'imagenet2012', 'imagenette', 'folder' or 'demo'.")


_SOURCES = {}


def get_source(data_cfg, use_prepared: bool | None = None) -> _Source:
  """The source of `data_cfg`, reading the prepared 256x256 copy of any split that has one."""
  if use_prepared is None:
    use_prepared = data_cfg.get('use_prepared', True)
  root = prepared_dir(data_cfg)
  splits = [s for s in (data_cfg.train_split, data_cfg.eval_split)
            if use_prepared and os.path.exists(os.path.join(root, s, 'info.json'))]
  key = (data_cfg.source, data_cfg.data_dir, data_cfg.folder, data_cfg.manual_dir,
         data_cfg.skip_bad_files, tuple(splits), root)
  if key not in _SOURCES:
    # Reading everything from the prepared copy spares building the original dataset.
    all_prepared = set(splits) == {data_cfg.train_split, data_cfg.eval_split}
    base = None if all_prepared else _base_source(data_cfg)
    _SOURCES[key] = _PreparedSource(root, splits, base) if splits else base
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


def load_stats(data_cfg) -> Stats:
  """The stats file's mean image and eigen-decomposition, or the ImageNet constants."""
  path = stats_path(data_cfg)
  size = data_cfg.stored_size
  if not os.path.exists(path):
    logging.warning('No stats file %s (write it with `python -m alexnet_jax.stats`): using '
                    'the ImageNet per-channel mean %s and RGB eigen-decomposition.', path,
                    IMAGENET_RGB_MEAN.tolist())
    return Stats(np.broadcast_to(IMAGENET_RGB_MEAN, (size, size, 3)).astype(np.float32),
                 IMAGENET_EIGVAL, IMAGENET_EIGVEC, ORIGINAL_STDDEV, ORIGINAL_EIGVEC)
  with np.load(path) as f:
    mean_image = f['mean_image'].astype(np.float32)
    eigval = f['eigval'].astype(np.float32)
    eigvec = f['eigvec'].astype(np.float32)
  if mean_image.shape != (size, size, 3):
    raise ValueError(f'{path}: mean image {mean_image.shape}, expected {(size, size, 3)}.')
  # The released code's standard deviations are those of the same covariance on 0-255.
  return Stats(mean_image, eigval, eigvec, 255.0 * np.sqrt(np.maximum(eigval, 0)), eigvec)


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
  'original': the released code, a_i times 0-255 standard deviations, divided by 1.1.
  """
  alpha = tf.convert_to_tensor(alpha, tf.float32)
  if lighting == 'paper':
    return 255.0 * tf.linalg.matvec(tf.constant(stats.eigvec), alpha * stats.eigval)
  if lighting == 'original':
    return tf.linalg.matvec(tf.constant(stats.original_eigvec),
                            alpha * stats.original_stddev) / ORIGINAL_DIVISOR
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
  # Mean removed before cropping: the crop loses the mean of its own window.
  window = lambda x: tf.slice(x, [offset[0], offset[1], 0], [crop, crop, 3])
  image = window(image) - window(tf.constant(stats.mean_image))
  if data_cfg.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  if data_cfg.lighting != 'none' and data_cfg.lighting_std > 0:
    alpha = tf.random.stateless_normal([3], light_seed, stddev=data_cfg.lighting_std)
    image = image + lighting_shift(alpha, stats, data_cfg.lighting)
  return {'images': image * data_cfg.input_scale, 'labels': tf.cast(label, tf.int32)}


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
  epoch e = s // steps_per_epoch shuffles this process's share with a seed from (seed, e),
  the first `start_step` batches are skipped before decoding, and every random choice is
  seeded from (seed, epoch, process, example index).
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
  records = source.records(data_cfg.train_split, process_index, process_count)
  # The index folds the process in, so shares of different processes never share seeds.
  records = records.enumerate().map(
      lambda i, r: (i * process_count + process_index, r))
  buffer = max(1, data_cfg.shuffle_buffer)

  def epoch(e):
    ds = records.shuffle(buffer, seed=seed * 1_000_003 + e, reshuffle_each_iteration=False)
    ds = ds.take(steps * local_batch)
    ds = ds.skip(tf.where(e == start_epoch, tf.constant(skip_steps * local_batch, tf.int64),
                             tf.constant(0, tf.int64)))
    return ds.map(lambda i, r: (r[0], r[1], e, i))

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
  mean_image = tf.constant(stats.mean_image)

  @tf.autograph.experimental.do_not_convert  # Plain TF ops; AutoGraph only warns here.
  def preprocess(encoded, label):
    image = (decode_stored(encoded, size) - mean_image) * data_cfg.input_scale
    return {'images': eval_views(image, crop, views), 'labels': tf.cast(label, tf.int32),
            'mask': tf.constant(True)}

  ds = source.records(data_cfg.eval_split, process_index, process_count)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  num_views = 1 if views == 'center' else 10
  padding = tf.data.Dataset.from_tensors(
      {'images': tf.zeros([num_views, crop, crop, 3]), 'labels': tf.constant(0),
       'mask': tf.constant(False)}).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch)
  ds = ds.batch(local_batch).prefetch(data_cfg.prefetch_batches).with_options(_options())
  return ds.as_numpy_iterator()

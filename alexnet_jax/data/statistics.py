"""Training-set statistics of Sec. 2 and 4.1: compute, write, read.

  python -m alexnet_jax.data.statistics --config=configs/X.py

computes them ahead of time (the main job computes them by itself when the file is
missing, `config.data.statistics='train_split'`) and prints where they went.

One streaming pass over a uniformly random subset of the training split (all of it, or
`config.data.stats_max_examples` images; the same subset every time), each image resized
and centre-cropped to the stored size as in Sec. 2, computes
  mean_image  [256, 256, 3] the per-pixel mean on the 0-255 scale (Sec. 2),
  rgb_cov     [3, 3] covariance of RGB pixel values over all pixels of all images, on the
              [0, 1] scale (Sec. 4.1's PCA; the widely used ImageNet values are on this scale),
  eigval      [3] its eigenvalues, largest first, and eigvec [3, 3] the eigenvectors (columns),
and writes them, with num_examples and the identity of the data they came from, to
`sources.stats_path`. `load_stats` reads that file if it was computed from this very
training split, and otherwise computes it first. Nothing this module imports imports it.
"""

from __future__ import annotations

import dataclasses
import io
import os

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_jax import metrics
from alexnet_jax.data import sources
from alexnet_jax.data.batches import Batches
from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data import spec as spec_lib
from alexnet_jax.data.spec import DataSpec

# The subset's order: fixed, so every run and every process picks the same images.
ORDER_SEED = 0

# Sec. 2's mean image reduced to ImageNet's usual per-channel mean on the 0-255 scale, used
# (broadcast to 256x256) only with config.data.statistics='imagenet' (docs/data.md).
IMAGENET_RGB_MEAN = np.array(spec_lib.IMAGENET_RGB_MEAN, np.float32)
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


@dataclasses.dataclass(frozen=True)
class Stats:
  """What Sec. 2 and 4.1 need from the training set."""
  mean_image: np.ndarray  # [256, 256, 3] float32, 0-255 scale.
  eigval: np.ndarray  # [3] eigenvalues of the RGB covariance on the [0, 1] scale.
  eigvec: np.ndarray  # [3, 3] eigenvectors as columns.
  original_stddev: np.ndarray  # [3] 0-255 standard deviations ('original' lighting).
  original_eigvec: np.ndarray  # [3, 3] their eigenvectors as columns.


def imagenet_stats(size: int) -> Stats:
  """ImageNet's per-channel mean (broadcast to size x size) and RGB eigen-decomposition."""
  return Stats(np.broadcast_to(IMAGENET_RGB_MEAN, (size, size, 3)).astype(np.float32),
               IMAGENET_EIGVAL, IMAGENET_EIGVEC, ORIGINAL_STDDEV, ORIGINAL_EIGVEC)


# ---------------------------------------------------------------------------- compute


def compute_stats(spec: DataSpec, batch_size: int = 32, *,
                  show_progress: bool = True) -> dict[str, np.ndarray]:
  """Mean image and RGB covariance eigen-decomposition in one pass (float64 sums)."""
  source = sources.get_source(spec)
  size, split = spec.stored_size, spec.train_split
  total = source.num_examples(split)
  if spec.stats_max_examples:
    total = min(total, spec.stats_max_examples)
  # A random subset: the first images of a folder listing would all be of a few classes.
  ds = source.records(split, 0, 1, order_seed=ORDER_SEED).take(total)
  ds = ds.map(lambda loaded, _: source.stored_image(split, loaded, size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).prefetch(2)
  image_sum = np.zeros([size, size, 3], np.float64)
  rgb_sum = np.zeros([3], np.float64)
  rgb_outer = np.zeros([3, 3], np.float64)
  n = 0
  progress = metrics.Progress(total, 'dataset statistics', enabled=show_progress)
  with Batches(ds.as_numpy_iterator()) as batches:
    for images in batches:
      images = images.astype(np.float64)
      image_sum += images.sum(axis=0)
      rgb = images.reshape(-1, 3) / 255.0
      rgb_sum += rgb.sum(axis=0)
      rgb_outer += rgb.T @ rgb
      n += images.shape[0]
      progress.update(images.shape[0])
  progress.close()
  if n == 0:
    raise ValueError('The training split is empty: no statistics to compute.')
  pixels = n * size * size
  rgb_mean = rgb_sum / pixels
  rgb_cov = rgb_outer / pixels - np.outer(rgb_mean, rgb_mean)
  eigval, eigvec = np.linalg.eigh(rgb_cov)
  order = np.argsort(eigval)[::-1]
  return {'mean_image': (image_sum / n).astype(np.float32), 'rgb_cov': rgb_cov,
          'eigval': eigval[order], 'eigvec': eigvec[:, order],
          'num_examples': np.int64(n)}


def write_stats(spec: DataSpec, *, show_progress: bool = True) -> str:
  """Computes the statistics and writes them where the pipeline will look; returns path."""
  path = sources.stats_path(spec)
  identity = sources.get_source(spec).identity(spec.train_split)
  logging.info('Computing the mean image and RGB PCA of %s (at most %s images) for %s.',
               identity.describe(), spec.stats_max_examples or 'all', path)
  stats = compute_stats(spec, show_progress=show_progress)
  stats['dataset'] = np.array(identity.to_json())
  buffer = io.BytesIO()
  np.savez(buffer, **stats)
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  # Written whole, then renamed: a reader never sees half a file, and several processes
  # writing the same statistics leave one whole file.
  tmp = f'{path}.tmp-{np.random.default_rng().integers(1 << 62)}'
  try:
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(buffer.getvalue())
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except (OSError, tf.errors.OpError) as e:  # A full disk, a file-size limit, permissions.
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    cause = ' '.join(str(getattr(e, 'message', e)).split()).split('; ')[-1]
    raise ValueError(f'cannot write the statistics ({buffer.getbuffer().nbytes / 2**20:.1f} MiB) '
                     f'to {path}: {cause}. Make room there or point --config.data.data_dir '
                     'elsewhere.') from None
  logging.info('Wrote %s: %d images, eigenvalues %s', path, stats['num_examples'],
               stats['eigval'])
  return path


# ------------------------------------------------------------------------------- read


def read_stats(spec: DataSpec, path: str) -> Stats | None:
  """The statistics in `path` if they are this training split's; None if missing or stale."""
  if not tf.io.gfile.exists(path):
    return None
  current = sources.get_source(spec).identity(spec.train_split)
  with tf.io.gfile.GFile(path, 'rb') as f, np.load(f) as z:
    made_from = DatasetIdentity.from_json(str(z['dataset'])) if 'dataset' in z else None
    mean_image = z['mean_image'].astype(np.float32)
    eigval = z['eigval'].astype(np.float32)
    eigvec = z['eigvec'].astype(np.float32)
  if made_from != current:
    if spec.stats_file and made_from is not None:
      raise ValueError(
          f'config.data.stats_file {path} holds the statistics of {made_from.describe()}, not '
          f'of {current.describe()}: unset it to compute this dataset\'s own, or set '
          "--config.data.statistics=imagenet.")
    if not spec.stats_file:
      logging.warning('%s was computed from %s, not %s: computing it again.', path,
                      made_from.describe() if made_from else 'unrecorded data',
                      current.describe())
      return None
    # A file given by hand without a record of its data: the user's choice, taken as is.
  size = spec.stored_size
  if mean_image.shape != (size, size, 3):
    raise ValueError(f'{path}: mean image {mean_image.shape}, expected {(size, size, 3)}; '
                     'delete it to compute it again.')
  # The released code's standard deviations are those of the same covariance on 0-255.
  return Stats(mean_image, eigval, eigvec, 255.0 * np.sqrt(np.maximum(eigval, 0)), eigvec)


def load_stats(spec: DataSpec) -> Stats:
  """The Sec. 2 mean image and Sec. 4.1 RGB eigen-decomposition, per `config.data.statistics`.

  'train_split' (the paper): the file at `stats_path`, if it was computed from this very
  training split; otherwise computed now (one streaming pass over at most
  `config.data.stats_max_examples` images) and written there.
  'imagenet': ImageNet's per-channel mean and eigen-decomposition, no pass over the data.
  """
  if spec.statistics == 'imagenet':
    return imagenet_stats(spec.stored_size)
  path = sources.stats_path(spec)
  stats = read_stats(spec, path)
  if stats is None:
    write_stats(spec)
    stats = read_stats(spec, path)
  return stats


def main(argv):
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    spec = DataSpec.from_config(flags.FLAGS.config.data)  # The one parse, at the boundary.
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  print(write_stats(spec))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # Flags are defined only when run as a program, so the module imports cleanly next to
  # other programs' --config flag.
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main)

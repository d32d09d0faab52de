"""Training-set statistics of Sec. 2 and 4.1: `python -m alexnet_jax.stats --config=configs/X.py`.

One streaming pass over a uniformly random subset of the training split (all of it, or
`config.data.stats_max_examples` images; the same subset every time), each image resized
and centre-cropped to 256x256 as in Sec. 2, computes
  mean_image  [256, 256, 3] the per-pixel mean on the 0-255 scale (Sec. 2),
  rgb_cov     [3, 3] covariance of RGB pixel values over all pixels of all images, on the
              [0, 1] scale (Sec. 4.1's PCA; the widely used ImageNet values are on this scale),
  eigval      [3] its eigenvalues, largest first, and eigvec [3, 3] the eigenvectors (columns),
and writes them, with num_examples and the identity of the data they came from, to
`input_pipeline.stats_path(config.data)`. The main job runs this by itself when that file
is missing (`config.data.statistics='train_split'`), so the command is only needed to
compute the statistics ahead of time.
"""

import io
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from alexnet_jax import input_pipeline, metrics

# The subset's order: fixed, so every run and every process picks the same images.
ORDER_SEED = 0


def compute_stats(data_cfg, batch_size: int = 32, *,
                  show_progress: bool = True) -> dict[str, np.ndarray]:
  """Mean image and RGB covariance eigen-decomposition in one pass (float64 sums)."""
  source = input_pipeline.get_source(data_cfg)
  size = data_cfg.stored_size
  total = source.num_examples(data_cfg.train_split)
  if data_cfg.stats_max_examples:
    total = min(total, data_cfg.stats_max_examples)
  # A random subset: the first images of a folder listing would all be of a few classes.
  ds = source.records(data_cfg.train_split, 0, 1, order_seed=ORDER_SEED).take(total)
  ds = ds.map(lambda enc, _: input_pipeline.decode_stored(enc, size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).prefetch(2)
  image_sum = np.zeros([size, size, 3], np.float64)
  rgb_sum = np.zeros([3], np.float64)
  rgb_outer = np.zeros([3, 3], np.float64)
  n = 0
  progress = metrics.Progress(total, 'dataset statistics', enabled=show_progress)
  for images in ds.as_numpy_iterator():
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


def write_stats(data_cfg, *, show_progress: bool = True) -> str:
  """Computes the statistics and writes them where the pipeline will look; returns path."""
  path = input_pipeline.stats_path(data_cfg)
  identity = input_pipeline.get_source(data_cfg).identity(data_cfg.train_split)
  logging.info('Computing the mean image and RGB PCA of %s (at most %s images) for %s.',
               identity.describe(), data_cfg.stats_max_examples or 'all', path)
  stats = compute_stats(data_cfg, show_progress=show_progress)
  stats['dataset'] = np.array(identity.to_json())
  buffer = io.BytesIO()
  np.savez(buffer, **stats)
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  # Written whole, then renamed: a reader never sees half a file, and several processes
  # writing the same statistics leave one whole file.
  tmp = f'{path}.tmp-{np.random.default_rng().integers(1 << 62)}'
  with tf.io.gfile.GFile(tmp, 'wb') as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(tmp, path, overwrite=True)
  logging.info('Wrote %s: %d images, eigenvalues %s', path, stats['num_examples'],
               stats['eigval'])
  return path


def main(argv):
  del argv
  print(write_stats(flags.FLAGS.config.data))


if __name__ == '__main__':
  # Flags are defined only when run as a program, so the module imports cleanly
  # next to other programs' --config flag.
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main)

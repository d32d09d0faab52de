"""Tests of `python -m alexnet_jax.data.statistics` against NumPy on known images."""

import hashlib
import itertools
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from alexnet_jax.data import statistics
from alexnet_jax.data.spec import DataSpec
from configs import default

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _known_folder(root, num_images=5):
  """Random 256x256 PNGs (lossless, so NumPy sees exactly what the pipeline decodes)."""
  rng = np.random.default_rng(0)
  images = []
  for i in range(num_images):
    # Correlated channels, so the covariance has a clear principal direction.
    base = rng.integers(0, 200, size=(256, 256, 1))
    image = np.clip(base + rng.integers(0, 56, size=(256, 256, 3)), 0, 255).astype(np.uint8)
    d = os.path.join(root, 'train', f'class_{i % 2}')
    os.makedirs(d, exist_ok=True)
    Image.fromarray(image).save(os.path.join(d, f'img_{i}.png'))
    images.append(image)
  os.makedirs(os.path.join(root, 'val', 'class_0'), exist_ok=True)
  Image.fromarray(images[0]).save(os.path.join(root, 'val', 'class_0', 'v.png'))
  # Same order as the folder source: class folders, then file names.
  order = sorted(range(num_images), key=lambda i: (i % 2, i))
  return [images[i] for i in order]


def _numpy_stats(images):
  x = np.stack(images).astype(np.float64)
  rgb = x.reshape(-1, 3) / 255.0
  return x.mean(axis=0), np.cov(rgb.T, bias=True)


def _data_cfg(tmp_path):
  cfg = default.get_config().data
  cfg.source = 'folder'
  cfg.folder = str(tmp_path / 'images')
  cfg.data_dir = str(tmp_path / 'data_dir')
  return cfg


def test_stats_match_numpy_and_pipeline_reads_them(tmp_path):
  images = _known_folder(tmp_path / 'images')
  data_cfg = _data_cfg(tmp_path)
  path = statistics.write_stats(DataSpec.from_config(data_cfg))
  key = 'folder-images-' + hashlib.sha1(data_cfg.folder.encode()).hexdigest()[:10]
  assert path == str(tmp_path / 'data_dir' / 'alexnet_jax_stats' / f'{key}-train.npz')
  mean_image, cov = _numpy_stats(images)
  with np.load(path) as f:
    np.testing.assert_allclose(f['mean_image'], mean_image, atol=1e-4)
    np.testing.assert_allclose(f['rgb_cov'], cov, rtol=1e-6, atol=1e-10)
    eigval, eigvec = f['eigval'], f['eigvec']
    assert int(f['num_examples']) == len(images)
  np.testing.assert_allclose(eigval, np.sort(np.linalg.eigvalsh(cov))[::-1], rtol=1e-6)
  np.testing.assert_allclose(cov @ eigvec, eigvec * eigval, atol=1e-8)  # C p_i = l_i p_i.
  np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-8)
  loaded = statistics.load_stats(DataSpec.from_config(data_cfg))
  np.testing.assert_allclose(loaded.mean_image, mean_image, atol=1e-4)
  np.testing.assert_allclose(loaded.original_stddev, 255 * np.sqrt(eigval), rtol=1e-5)


def test_stats_max_examples_and_resize(tmp_path):
  # A 512x300 image (resized by 256/300, centre-cropped) of one flat colour and two 256x256
  # ones of others. With stats_max_examples=2 the statistics are those of two whole images
  # of the three (a random subset, the same each time): the mean image is their average,
  # the covariance that of their two colours.
  root = tmp_path / 'images'
  colours = [(10, 200, 40), (250, 20, 90), (0, 0, 0)]
  for i, (shape, colour) in enumerate(zip([(300, 512, 3), (256, 256, 3), (256, 256, 3)],
                                          colours)):
    os.makedirs(root / 'train' / 'c', exist_ok=True)
    Image.fromarray(np.full(shape, colour, np.uint8)).save(root / 'train' / 'c' / f'{i}.png')
  data_cfg = _data_cfg(tmp_path)
  data_cfg.stats_max_examples = 2
  data_cfg.stats_file = str(tmp_path / 'custom.npz')
  result = statistics.compute_stats(DataSpec.from_config(data_cfg))
  matches = []
  for pair in itertools.combinations(colours, 2):
    two = np.array(pair, np.float64)
    if np.allclose(result['mean_image'], np.broadcast_to(two.mean(0), (256, 256, 3)),
                   atol=1e-3):
      np.testing.assert_allclose(result['rgb_cov'], np.cov((two / 255).T, bias=True),
                                 atol=1e-7)
      matches.append(pair)
  assert len(matches) == 1
  assert int(result['num_examples']) == 2
  again = statistics.compute_stats(DataSpec.from_config(data_cfg))
  np.testing.assert_array_equal(again['mean_image'], result['mean_image'])


def test_stats_command_line_with_config_overrides(tmp_path):
  images = _known_folder(tmp_path / 'images', num_images=2)
  out = tmp_path / 'cli.npz'
  subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.data.statistics', '--config=configs/default.py',
       '--config.data.source=folder', f'--config.data.folder={tmp_path / "images"}',
       f'--config.data.data_dir={tmp_path / "data_dir"}', f'--config.data.stats_file={out}'],
      cwd=_REPO, check=True, capture_output=True, env={**os.environ, 'PYTHONPATH': _REPO})
  with np.load(out) as f:
    np.testing.assert_allclose(f['mean_image'], _numpy_stats(images)[0], atol=1e-4)


def test_statistics_imagenet_uses_the_constants_without_a_pass(tmp_path):
  data_cfg = _data_cfg(tmp_path)  # Its folder does not exist: no pass can read it.
  data_cfg.statistics = 'imagenet'
  loaded = statistics.load_stats(DataSpec.from_config(data_cfg))
  np.testing.assert_allclose(loaded.mean_image[17, 200], [123.68, 116.78, 103.94])
  np.testing.assert_allclose(loaded.eigval, [0.2175, 0.0188, 0.0045])
  assert not os.path.exists(tmp_path / 'data_dir')

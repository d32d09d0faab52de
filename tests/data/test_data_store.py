"""The data spec's one-line errors and the prepared copy's stored size and raw format,
checked against the images written and NumPy."""

import json
import os
import subprocess
import sys
import weakref

import ml_collections
import numpy as np
from PIL import Image
import pytest

from alexnet_jax.data import batches as batches_lib
from alexnet_jax.data import pipeline, sources, statistics
from alexnet_jax.data.spec import DataSpec
from configs import default

SIZE = 32
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _folder(root, n_train=12, n_val=5, shape=(SIZE, SIZE, 3), seed=0):
  """root/<split>/c<k>/<i>.png of random pixels (PNG: lossless); returns (root, images)."""
  rng = np.random.default_rng(seed)
  images = {}
  for split, n in (('train', n_train), ('val', n_val)):
    images[split] = []
    for i in range(n):
      image = rng.integers(0, 256, size=shape, dtype=np.uint8)
      os.makedirs(root / split / f'c{i % 3}', exist_ok=True)
      Image.fromarray(image).save(root / split / f'c{i % 3}' / f'{i:03d}.png')
      images[split].append((image, i % 3))
  return str(root), images


def _cfg(tmp_path, folder, **overrides):
  cfg = default.get_config().data
  cfg.source, cfg.folder = 'folder', folder
  cfg.data_dir = str(tmp_path / 'data_dir')
  cfg.stored_size, cfg.crop_size = SIZE, SIZE
  cfg.lighting, cfg.flip, cfg.statistics = 'none', False, 'imagenet'
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _prepare(cfg, store_format):
  for split in ('train', 'validation'):
    sources.prepare_split(DataSpec.from_config(cfg), split, store_format=store_format)


def _one_line(e):
  assert '\n' not in str(e.value)
  return str(e.value)


# ------------------------------------------------------------------------------ spec


def test_spec_defaults_and_one_line_errors():
  bare = ml_collections.ConfigDict({'source': 'folder'})  # Every other field defaulted.
  spec = DataSpec.from_config(bare)
  assert (spec.mean_patch, spec.augment_on, spec.use_prepared) == ('crop', 'auto', True)
  assert DataSpec.from_config(spec) is spec
  assert [spec.for_backend(b).augment_on for b in ('cpu', 'gpu', 'tpu')] == [
      'host', 'device', 'device']
  assert DataSpec(augment_on='host').for_backend('gpu').augment_on == 'host'
  for field, value, choices in (('augment_on', 'gpu', "('auto', 'host', 'device')"),
                                ('mean_patch', 'window', "('crop', 'center')"),
                                ('lighting', 'pca', "('paper', 'original', 'none')"),
                                ('statistics', 'mean', "('train_split', 'imagenet')")):
    with pytest.raises(ValueError) as e:
      DataSpec.from_config(ml_collections.ConfigDict({field: value}))
    assert f'config.data.{field}' in _one_line(e) and choices in str(e.value)


def test_unknown_store_format_lists_the_choices(tmp_path):
  folder, _ = _folder(tmp_path / 'images', 3, 1)
  with pytest.raises(ValueError) as e:
    sources.prepare_split(DataSpec.from_config(_cfg(tmp_path, folder)), 'train', store_format='png')
  assert "('jpeg', 'raw')" in _one_line(e)


# ------------------------------------------------------------------------ stored size


@pytest.mark.parametrize('store_format', ['jpeg', 'raw'])
def test_copy_of_another_stored_size_is_a_one_line_error(tmp_path, store_format):
  folder, _ = _folder(tmp_path / 'images', 6, 2, shape=(40, 48, 3))
  cfg = _cfg(tmp_path, folder)
  _prepare(cfg, store_format)
  with open(os.path.join(sources.prepared_dir(DataSpec.from_config(cfg)), 'train',
                         'info.json')) as f:
    info = json.load(f)
  assert (info['size'], info['format'], info['num_examples']) == (SIZE, store_format, 6)
  other = _cfg(tmp_path, folder, stored_size=36, crop_size=32)
  with pytest.raises(ValueError) as e:
    sources.dataset_info(DataSpec.from_config(other))
  message = _one_line(e)
  assert '32x32' in message and 'stored_size is 36' in message
  assert 'alexnet_jax.data.prepare' in message and 'use_prepared=False' in message
  # Nothing was deleted, and the copy still serves the size it was made at.
  assert sources.dataset_info(DataSpec.from_config(cfg)).num_train == 6


# ------------------------------------------------------------------------- raw store


def test_raw_copy_holds_the_source_pixels_exactly(tmp_path):
  folder, images = _folder(tmp_path / 'images')
  cfg = _cfg(tmp_path, folder)
  direct = list(pipeline.eval_batches(DataSpec.from_config(cfg), global_batch_size=5,
                                      views='center'))
  _prepare(cfg, 'raw')
  assert isinstance(sources.get_source(DataSpec.from_config(cfg)), sources.PreparedSource)
  root = sources.prepared_dir(DataSpec.from_config(cfg))
  assert sorted(os.listdir(os.path.join(root, 'validation'))) == ['images.npy', 'info.json',
                                                                  'labels.npy']
  stored = np.load(os.path.join(root, 'validation', 'images.npy'))
  assert stored.dtype == np.uint8 and stored.shape == (5, SIZE, SIZE, 3)
  # The eval split is stored in the source's order: PNG -> uint8 -> the same pixels.
  np.testing.assert_array_equal(stored, np.stack([im for im, _ in _sorted(images['val'])]))
  from_copy = list(pipeline.eval_batches(DataSpec.from_config(cfg), global_batch_size=5,
                                         views='center'))
  for a, b in zip(direct, from_copy):
    np.testing.assert_array_equal(a['images'], b['images'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
  # Training: with crop = stored size, no reflection and no lighting, each epoch shows
  # every training image exactly once, minus the mean, with its label.
  train = {im.tobytes(): label for im, label in images['train']}
  mean = statistics.IMAGENET_RGB_MEAN
  it = pipeline.train_batches(DataSpec.from_config(cfg), global_batch_size=4, seed=0)
  for _ in range(2):
    seen = []
    for _ in range(3):
      b = next(it)
      for image, label in zip(b['images'], b['labels']):
        pixels = np.round(image + mean).astype(np.uint8)
        np.testing.assert_allclose(pixels, image + mean, atol=1e-3)
        assert train[pixels.tobytes()] == label
        seen.append(pixels.tobytes())
    assert sorted(seen) == sorted(train)


def _sorted(items):
  """The folder source's order: class folders, then file names (= index within class)."""
  return [x for _, x in sorted(((x[1], i), x) for i, x in enumerate(items))]


def test_raw_copy_of_resized_images_is_the_rounded_jpeg_free_resample(tmp_path):
  folder, _ = _folder(tmp_path / 'images', 6, 3, shape=(45, 60, 3))
  cfg = _cfg(tmp_path, folder)
  direct = next(pipeline.eval_batches(DataSpec.from_config(cfg), global_batch_size=3,
                                      views='center'))
  _prepare(cfg, 'raw')
  raw = next(pipeline.eval_batches(DataSpec.from_config(cfg), global_batch_size=3,
                                   views='center'))
  # The raw copy stores the resampled image rounded to uint8: within half a level.
  np.testing.assert_allclose(raw['images'], direct['images'], atol=0.5 + 1e-3)
  jpeg_cfg = _cfg(tmp_path, folder, prepared_dir=str(tmp_path / 'jpeg_copy'))
  _prepare(jpeg_cfg, 'jpeg')
  jpeg = next(pipeline.eval_batches(DataSpec.from_config(jpeg_cfg), global_batch_size=3,
                                    views='center'))
  # JPEG (quality 90) of random noise is lossy; the raw copy is not.
  assert np.abs(jpeg['images'] - direct['images']).max() > 5


def test_raw_copy_resumes_and_splits_over_processes(tmp_path):
  folder, images = _folder(tmp_path / 'images', 16, 2)
  cfg = _cfg(tmp_path, folder, lighting='paper', flip=True, crop_size=24)
  _prepare(cfg, 'raw')
  run = lambda **kw: pipeline.train_batches(DataSpec.from_config(cfg), global_batch_size=4,
                                            seed=0, **kw)
  it = run()
  reference = [next(it) for _ in range(6)]
  resumed = run(start_step=3)
  for ref in reference[3:]:
    np.testing.assert_array_equal(next(resumed)['images'], ref['images'])
  # Two processes: disjoint shares that together hold every image once per epoch.
  plain = _cfg(tmp_path, folder)
  labels = []
  for p in range(2):
    it = pipeline.train_batches(DataSpec.from_config(plain), global_batch_size=4, seed=0,
                                process_index=p, process_count=2)
    labels.append([bytes(np.round(x + statistics.IMAGENET_RGB_MEAN).astype(np.uint8))
                   for _ in range(4) for x in next(it)['images']])
  assert not set(labels[0]) & set(labels[1])
  assert sorted(labels[0] + labels[1]) == sorted(im.tobytes() for im, _ in images['train'])


def test_truncated_raw_copy_is_a_one_line_error_and_is_kept(tmp_path):
  folder, _ = _folder(tmp_path / 'images', 6, 2)
  cfg = _cfg(tmp_path, folder)
  _prepare(cfg, 'raw')
  path = os.path.join(sources.prepared_dir(DataSpec.from_config(cfg)), 'train', 'images.npy')
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size - 1000)
  with pytest.raises(ValueError) as e:
    sources.dataset_info(DataSpec.from_config(cfg))
  message = _one_line(e)
  assert 'truncated' in message and path in message and 'alexnet_jax.data.prepare' in message
  assert os.path.getsize(path) == size - 1000  # The evidence stays where it was.
  assert sources.get_source(DataSpec.from_config(cfg), use_prepared=False).num_examples(
      'train') == 6


# ------------------------------------------------------------------- every process ends


# Reads a raw store through the training pipeline (augment_on='device') and returns with its
# batches still held by a module global, never closed: the iterator lives until the
# interpreter finalizes. Every batch is a whole epoch (batch = the split), so its pixel and
# label sums are the store's, whatever the order.
_READ_AND_RETURN = """
import hashlib
import sys

import numpy as np

from alexnet_jax.data import pipeline
from alexnet_jax.data.spec import DataSpec
from configs import default

folder, data_dir, size, batch_size, num_batches = sys.argv[1:]
cfg = default.get_config().data
cfg.update(source='folder', folder=folder, data_dir=data_dir, stored_size=int(size),
           crop_size=int(size), statistics='imagenet', augment_on='device')
batches = pipeline.train_batches(DataSpec.from_config(cfg), global_batch_size=int(batch_size),
                                 seed=0)
order, pixels, labels = hashlib.sha256(), 0, 0
for _ in range(int(num_batches)):
  batch = next(batches)
  order.update(batch['index'].tobytes())
  pixels += int(batch['images'][:, ::8, ::8].sum(dtype=np.int64))
  labels += int(batch['labels'].sum())
print(f'batches {num_batches} pixels {pixels} labels {labels} order {order.hexdigest()}')
"""


def test_a_process_that_leaves_a_raw_store_pipeline_open_exits(tmp_path):
  # Issue 26: the raw store reads through a Python call (tf.numpy_function). An iterator
  # still alive when the interpreter finalizes waited forever for a call that could no
  # longer return: with this script, 8 of 8 runs hung before the atexit close (25 MB
  # gathers: 128 images of 256x256 a batch; smaller batches hang less often).
  size, n, num_batches = 256, 128, 50
  folder, _ = _folder(tmp_path / 'images', n, 3, shape=(size, size, 3))
  cfg = _cfg(tmp_path, folder, stored_size=size, crop_size=size)
  _prepare(cfg, 'raw')
  train_dir = os.path.join(sources.prepared_dir(DataSpec.from_config(cfg)), 'train')
  images = np.load(os.path.join(train_dir, 'images.npy'), mmap_mode='r')
  labels = np.load(os.path.join(train_dir, 'labels.npy'))
  expected = (f'batches {num_batches} pixels '
              f'{num_batches * int(images[:, ::8, ::8].sum(dtype=np.int64))} '
              f'labels {num_batches * int(labels.sum())} order ')
  orders = set()
  for run in range(5):
    try:
      result = subprocess.run(
          [sys.executable, '-c', _READ_AND_RETURN, folder, cfg.data_dir, str(size), str(n),
           str(num_batches)], cwd=REPO, capture_output=True, text=True, timeout=120,
          env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    except subprocess.TimeoutExpired:
      pytest.fail(f'Run {run + 1} of 5 did not exit within 120 s of starting.')
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.strip().splitlines()
    assert printed and printed[-1].startswith(expected), (printed, expected)
    orders.add(printed[-1].split()[-1])
  assert len(orders) == 1  # The same seeded batches in every run.


def test_batches_close_releases_the_pipeline(tmp_path):
  folder, _ = _folder(tmp_path / 'images', 8, 3)
  cfg = _cfg(tmp_path, folder, augment_on='device')
  _prepare(cfg, 'raw')
  batches = pipeline.train_batches(DataSpec.from_config(cfg), global_batch_size=4, seed=0)
  first = next(batches)
  tf_iterator = weakref.ref(batches._iterator)  # pylint: disable=protected-access
  assert batches in batches_lib._OPEN  # pylint: disable=protected-access
  batches.close()
  assert tf_iterator() is None and batches not in batches_lib._OPEN  # pylint: disable=protected-access
  assert next(batches, None) is None
  batches.close()  # Idempotent.
  with pipeline.train_batches(DataSpec.from_config(cfg), global_batch_size=4, seed=0) as again:
    np.testing.assert_array_equal(next(again)['images'], first['images'])
  assert next(again, None) is None

  class Layout:  # Host arrays stand in for global arrays.
    global_batch = staticmethod(lambda batch: batch)

  local = pipeline.train_batches(DataSpec.from_config(cfg), global_batch_size=4, seed=0)
  with pipeline.device_batches(local, Layout(), 2) as on_devices:
    np.testing.assert_array_equal(next(on_devices)['images'], first['images'])
  assert next(local, None) is None  # Closing the device batches closed their source.
  # A finite pipeline is released when it runs out.
  ev = pipeline.eval_batches(DataSpec.from_config(cfg), global_batch_size=2, views='center')
  assert len(list(ev)) == 2 and ev not in batches_lib._OPEN  # pylint: disable=protected-access

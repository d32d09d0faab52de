"""The input pipeline (alexnet_jax.data: decode, augment, sources, pipeline) against
hand-computed pixels, NumPy and formulas."""

import hashlib
import logging
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import augment, decode, pipeline, sources, statistics
from alexnet_jax.data.spec import DataSpec
from configs import default


def _data_cfg(tmp_path, **overrides):
  cfg = default.get_config().data
  cfg.data_dir = str(tmp_path / 'data_dir')
  cfg.shuffle_buffer = 64
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _position_image(blue=200):
  """256x256 uint8 image with R = row, G = column, B = `blue`: pixels name their place."""
  y, x = np.mgrid[0:256, 0:256]
  return np.stack([y, x, np.full_like(y, blue)], -1).astype(np.uint8)


def _write_folder(root, images_by_split):
  """root/<split>/class_<label>/img_<i>.png for {split: [(uint8 image, label)]}."""
  for split, items in images_by_split.items():
    for i, (image, label) in enumerate(items):
      d = os.path.join(root, split, f'class_{label}')
      os.makedirs(d, exist_ok=True)
      Image.fromarray(image).save(os.path.join(d, f'img_{i:04d}.png'))
  return str(root)


def _write_stats(path, mean_image, eigval=(0.04, 0.01, 0.0), eigvec=np.eye(3)):
  np.savez(path, mean_image=np.asarray(mean_image, np.float32),
           eigval=np.asarray(eigval, np.float32), eigvec=np.asarray(eigvec, np.float32))
  return str(path)


def _constant_images(n, num_classes=3):
  """Image k is constant 5 * k + 3 (unique), label k % num_classes."""
  return [(np.full([256, 256, 3], 5 * k + 3, np.uint8), k % num_classes) for k in range(n)]


# ------------------------------------------------------------------- Sec. 2 preprocessing


def test_resize_up_and_center_crop_on_gradient():
  # 128x200, value = column: shorter side 128 -> 256 doubles both sides (256x400); the
  # centre crop starts at column (400 - 256) // 2 = 72. Bilinear with half-pixel centres
  # maps output column j to source column (j + 0.5) / 2 - 0.5, where the value is that.
  image = np.broadcast_to(np.arange(200, dtype=np.float32)[None, :, None], (128, 200, 3))
  out = decode.resize_and_center_crop(tf.constant(image), 256).numpy()
  j = np.arange(256)
  expected = np.broadcast_to(((j + 72) + 0.5) / 2 - 0.5, (256, 256))
  assert out.shape == (256, 256, 3)
  np.testing.assert_allclose(out[..., 1], expected, atol=1e-3)


def test_resize_down_and_center_crop_on_gradient():
  # 600 wide x 512 high, value = row: 512 -> 256 halves (256x300); crop column offset 22,
  # row offset 0. Output row i is centred on source position 2i + 0.5 (half-pixel centres);
  # the triangle filter is symmetric, so a ramp keeps its value there.
  image = np.broadcast_to(np.arange(512, dtype=np.float32)[:, None, None], (512, 600, 3))
  out = decode.resize_and_center_crop(tf.constant(image), 256).numpy()
  i = np.arange(256)[:, None]
  np.testing.assert_allclose(out[2:-2, :, 0], np.broadcast_to(2 * i + 0.5, (256, 256))[2:-2],
                             atol=1e-3)  # Border rows: the filter is clipped there.
  # Alternating 0/1 columns: the antialiased halving (triangle weights 1/8, 3/8, 3/8, 1/8
  # over four columns) gives a flat 0.5 where plain sampling would alias to 0 or 1.
  stripes = np.broadcast_to((np.arange(600) % 2).astype(np.float32)[None, :, None],
                            (512, 600, 3))
  out = decode.resize_and_center_crop(tf.constant(stripes), 256).numpy()
  np.testing.assert_allclose(out, 0.5, atol=1e-3)


def test_resize_non_integer_factor_500x375():
  # A 500x375 photograph's shape: 375 -> 256 rows, 500 -> round(500 * 256 / 375) = 341
  # columns, crop from column 42. Output column j is centred on source position
  # (j + 0.5) * 500 / 341 - 0.5, where the ramp x / 2 has the value expected.
  image = np.broadcast_to((np.arange(500, dtype=np.float32) / 2)[None, :, None], (375, 500, 3))
  out = decode.resize_and_center_crop(tf.constant(image), 256).numpy()
  j = np.arange(42, 42 + 256)
  expected = ((j + 0.5) * 500 / 341 - 0.5) / 2
  # TF samples the widened filter at pixel centres: within 1.5% of a ramp step (0.73).
  np.testing.assert_allclose(out[100, :, 2], expected, atol=0.011)


def _augment(encoded, label, epoch, index, *, data_cfg, stats, seed):
  """One training example from its encoded image, as the pipeline makes it: decoded to
  the stored size, then `data.augment.augment`."""
  spec = DataSpec.from_config(data_cfg)
  image = decode.decode_stored(encoded, spec.stored_size)
  return {'images': augment.augment(image, epoch, index, spec=spec, stats=stats, seed=seed),
          'labels': tf.cast(label, tf.int32)}


def _augment_many(data_cfg, stats, image, n, seed=0, epoch=0, keep=lambda x: x):
  """n augmented views of one image (`keep` picks the pixels worth keeping in memory)."""
  encoded = tf.io.encode_png(tf.constant(image))
  ds = tf.data.Dataset.range(n).map(lambda i: keep(_augment(
      encoded, 0, epoch, i, data_cfg=data_cfg, stats=stats, seed=seed)['images']))
  return np.stack(list(ds.as_numpy_iterator()))


def _stats(mean_image, eigval=(0.04, 0.01, 0.0), eigvec=np.eye(3)):
  eigval = np.asarray(eigval, np.float32)
  eigvec = np.asarray(eigvec, np.float32)
  return statistics.Stats(np.asarray(mean_image, np.float32), eigval, eigvec,
                              255 * np.sqrt(eigval), eigvec)


@pytest.mark.parametrize('crop', [224, 227])
def test_random_crops_flips_and_mean_subtraction(tmp_path, crop):
  data_cfg = _data_cfg(tmp_path, crop_size=crop, lighting='none')
  # Mean only in blue, so red/green still name the crop's place and blue shows whether
  # the mean of the crop's own window was subtracted.
  mean = np.zeros([256, 256, 3], np.float32)
  mean[..., 2] = np.random.default_rng(0).uniform(0, 100, size=(256, 256))
  image = _position_image(blue=200)
  def place(view):  # (top, left, reflected) from the view's first row.
    flip = view[0, 1, 1] < view[0, 0, 1]  # Columns decrease: reflected.
    return int(view[0, 0, 0]), int(view[0, -1, 1] if flip else view[0, 0, 1]), flip

  for view in _augment_many(data_cfg, _stats(mean), image, 30):
    top, left, flip = place(view)
    window = (image.astype(np.float32) - mean)[top:top + crop, left:left + crop]
    np.testing.assert_allclose(view, window[:, ::-1] if flip else window, atol=1e-4)
  # Many more draws, keeping only the first row's corners.
  rows = _augment_many(data_cfg, _stats(mean), image, 800, epoch=1,
                       keep=lambda x: tf.gather(x[:1], [0, 1, crop - 1], axis=1))
  tops, lefts, flips = zip(*(place(r) for r in rows))
  # Offsets uniform over all (256 - crop + 1) values; reflection with probability 1/2.
  assert set(tops) == set(range(256 - crop + 1)) == set(lefts)
  assert 0.42 < np.mean(flips) < 0.58


def test_augmentation_is_stateless_in_seed_epoch_index(tmp_path):
  data_cfg = _data_cfg(tmp_path)
  stats = _stats(np.zeros([256, 256, 3]), eigval=(0.2, 0.02, 0.005))
  image = _position_image()
  a = _augment_many(data_cfg, stats, image, 4, seed=1, epoch=2)
  b = _augment_many(data_cfg, stats, image, 4, seed=1, epoch=2)
  c = _augment_many(data_cfg, stats, image, 4, seed=1, epoch=3)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def _random_rotation(seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  return q


@pytest.mark.parametrize('lighting', ['paper', 'original'])
def test_pca_lighting_shift_distribution(tmp_path, lighting):
  eigvec = _random_rotation(1)
  eigval = np.array([0.05, 0.01, 0.0])  # A zero eigenvalue: shifts stay in a plane.
  data_cfg = _data_cfg(tmp_path, lighting=lighting, flip=False)
  image = np.full([256, 256, 3], 128, np.uint8)
  stats = _stats(np.zeros([256, 256, 3]), eigval, eigvec)
  # Drawn once per image, not per pixel: the shift is one colour over the whole crop.
  views = _augment_many(data_cfg, stats, image, 5)
  np.testing.assert_allclose(views, views[:, :1, :1, :] + 0 * views, atol=1e-3)
  pixel = _augment_many(data_cfg, stats, image, 4000, keep=lambda x: x[0, 0])
  if lighting == 'paper':
    shift = pixel - 128.0
    expected_std = 0.1 * eigval * 255  # [0, 1]-scale shift, times 255.
  else:
    # The released code: (centred image + shift) / 1.1, the shift a_i * 0-255 std-dev.
    shift = pixel * 1.1 - 128.0
    expected_std = 0.1 * 255 * np.sqrt(eigval)
  coords = shift @ eigvec  # Coordinates in the eigenbasis.
  np.testing.assert_allclose(coords[:, 2], 0, atol=1e-3)  # In the span of p1, p2.
  cov = np.cov(coords.T)
  np.testing.assert_allclose(np.sqrt(np.diag(cov))[:2], expected_std[:2], rtol=0.06)
  assert abs(cov[0, 1]) < 0.06 * expected_std[0] * expected_std[1]


def test_lighting_none_and_zero_std_add_nothing(tmp_path):
  stats = _stats(np.zeros([256, 256, 3]), (0.2, 0.02, 0.005), _random_rotation(2))
  image = np.full([256, 256, 3], 77, np.uint8)
  for overrides in ({'lighting': 'none'}, {'lighting': 'paper', 'lighting_std': 0.0}):
    views = _augment_many(_data_cfg(tmp_path, **overrides), stats, image, 20)
    np.testing.assert_array_equal(views, 77.0)
  np.testing.assert_array_equal(
      augment.lighting_shift(np.ones([5, 3]), stats, 'none'), 0.0)


def test_default_lighting_constants_match_spec():
  # Sec. 4.1 (the widely used ImageNet values): eigenvector rows are R, G, B components; columns are the eigenvectors.
  stats = statistics.Stats(None, statistics.IMAGENET_EIGVAL, statistics.IMAGENET_EIGVEC,
                           statistics.ORIGINAL_STDDEV, statistics.ORIGINAL_EIGVEC)
  alpha = np.array([1.0, 0.0, 0.0], np.float32)
  np.testing.assert_allclose(augment.lighting_shift(alpha, stats, 'paper'),
                             255 * 0.2175 * np.array([-0.5675, -0.5808, -0.5836]), rtol=1e-5)
  np.testing.assert_allclose(augment.lighting_shift(alpha, stats, 'original'),
                             121.78 * np.array([-0.564, -0.576, -0.592]), rtol=1e-5)


def test_original_lighting_scales_the_whole_centred_image(tmp_path):
  # cuda-convnet2 convdata.py: data -= mean crop; data += noise * 0.1; data *= 1 / 1.1. The
  # same example with lighting 'none' has the same crop and reflection (their seeds do not
  # depend on the lighting), so NumPy can rebuild each 'original' view from it.
  mean = np.random.default_rng(4).uniform(0, 80, size=(256, 256, 3))
  stats = _stats(mean, eigval=(0.05, 0.01, 0.002), eigvec=_random_rotation(5))
  image = _position_image(blue=150)
  plain = _augment_many(_data_cfg(tmp_path, lighting='none'), stats, image, 6)
  noisy = _augment_many(_data_cfg(tmp_path, lighting='original'), stats, image, 6)
  for p, n in zip(plain.astype(np.float64), noisy.astype(np.float64)):
    shift = (n * 1.1 - p).reshape(-1, 3).mean(0)  # One colour per image (Sec. 4.1).
    assert np.abs(shift).max() > 0.5
    np.testing.assert_allclose(n, (p + shift) / 1.1, atol=1e-3)
  # Dividing only the shift, as before, would leave the image unscaled: far from this.
  assert np.abs(noisy - plain).max() > 20


@pytest.mark.parametrize('flip', [False, True])
def test_mean_patch_center_subtracts_the_central_mean_crop(tmp_path, flip):
  # The original code: crop (and reflect), then subtract the mean image's centre 224 patch.
  mean = np.zeros([256, 256, 3], np.float32)
  mean[..., 2] = np.random.default_rng(6).uniform(0, 100, size=(256, 256))
  center_mean = mean[16:240, 16:240]
  image = _position_image(blue=200)
  data_cfg = _data_cfg(tmp_path, lighting='none', flip=flip, mean_patch='center')
  for view in _augment_many(data_cfg, _stats(mean), image, 20):
    reflected = view[0, 1, 1] < view[0, 0, 1]
    top, left = int(view[0, 0, 0]), int(view[0, -1, 1] if reflected else view[0, 0, 1])
    crop = image[top:top + 224, left:left + 224].astype(np.float32)
    np.testing.assert_allclose(view, (crop[:, ::-1] if reflected else crop) - center_mean,
                               atol=1e-4)
  # Evaluation: every one of the 10 views, reflections included, minus the same patch.
  folder = _write_folder(tmp_path / 'images', {'train': [(image, 0)], 'val': [(image, 0)]})
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder, mean_patch='center',
                       stats_file=_write_stats(tmp_path / 's.npz', mean))
  ten = next(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=1,
                                   views='ten'))
  corners = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
  for v, (t, l) in enumerate(corners):
    crop = image[t:t + 224, l:l + 224].astype(np.float32)
    np.testing.assert_allclose(ten['images'][0, v], crop - center_mean, atol=1e-4)
    np.testing.assert_allclose(ten['images'][0, 5 + v], crop[:, ::-1] - center_mean, atol=1e-4)
  with pytest.raises(ValueError, match='mean_patch'):
    bad = _data_cfg(tmp_path, source='folder', folder=folder, mean_patch='window')
    next(pipeline.eval_batches(DataSpec.from_config(bad), global_batch_size=1, views='center'))


# ----------------------------------------------------------------------- eval views


def test_eval_center_and_ten_views_hand_computed(tmp_path):
  image = _position_image(blue=200)
  folder = _write_folder(tmp_path / 'images', {'train': [(image, 0), (image, 1)],
                                               'val': [(image, 0), (image, 1)]})
  mean = np.random.default_rng(3).uniform(0, 50, size=(256, 256, 3))
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder,
                       stats_file=_write_stats(tmp_path / 's.npz', mean))
  ten = next(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=2,
                                   views='ten'))
  center = next(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=2,
                                      views='center'))
  centred = image.astype(np.float32) - mean
  c = 224
  # Documented order: top-left, top-right, bottom-left, bottom-right, centre, reflections.
  corners = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
  # Hand check of the place each view starts at (R = row, G = column).
  for v, (t, l) in enumerate(corners):
    np.testing.assert_allclose(ten['images'][0, v, 0, 0, :2] + mean[t, l, :2], [t, l],
                               atol=1e-4)
    np.testing.assert_allclose(ten['images'][0, 5 + v, 0, 0, :2] + mean[t, l + c - 1, :2],
                               [t, l + c - 1], atol=1e-4)
    window = centred[t:t + c, l:l + c]
    np.testing.assert_allclose(ten['images'][0, v], window, atol=1e-4)
    np.testing.assert_allclose(ten['images'][0, 5 + v], window[:, ::-1], atol=1e-4)
  assert ten['images'].shape == (2, 10, c, c, 3)
  np.testing.assert_allclose(center['images'][:, 0], np.stack([centred[16:240, 16:240]] * 2),
                             atol=1e-4)
  np.testing.assert_array_equal(center['labels'], [0, 1])


def test_input_scale_multiplies_the_centred_image(tmp_path):
  # data.input_scale = 1/60 gives unit-scale inputs: (pixel - mean) / 60, train and eval.
  image = _position_image(blue=200)
  folder = _write_folder(tmp_path / 'images', {'train': [(image, 0), (image, 1)],
                                               'val': [(image, 0), (image, 1)]})
  mean = np.full((256, 256, 3), 100.0)
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder, input_scale=1 / 60,
                       lighting='none', flip=False,
                       stats_file=_write_stats(tmp_path / 's.npz', mean))
  center = next(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=2,
                                      views='center'))
  expected = (image[16:240, 16:240].astype(np.float32) - 100.0) / 60
  np.testing.assert_allclose(center['images'][0, 0], expected, atol=1e-4)
  batch = next(pipeline.train_batches(DataSpec.from_config(data_cfg), global_batch_size=2, seed=0))
  # Any crop: R = row and G = column, so the centred, scaled values name the offset.
  top, left = np.round(batch['images'][0, 0, 0, :2] * 60 + 100).astype(int)
  np.testing.assert_allclose(batch['images'][0],
                             (image[top:top + 224, left:left + 224] - 100.0) / 60, atol=1e-4)


@pytest.mark.parametrize('batch_size,process_count', [(4, 1), (6, 2), (6, 3), (8, 2),
                                                      (64, 4)])
def test_eval_masks_count_every_example_once(tmp_path, batch_size, process_count):
  n = 23
  folder = _write_folder(tmp_path / 'images', {'train': _constant_images(3),
                                               'val': _constant_images(n)})
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder,
                       stats_file=_write_stats(tmp_path / 's.npz', np.zeros([256, 256, 3])))
  seen, num_batches = [], []
  for p in range(process_count):
    batches = list(pipeline.eval_batches(
        DataSpec.from_config(data_cfg), global_batch_size=batch_size, views='center',
        process_index=p, process_count=process_count))
    num_batches.append(len(batches))
    for b in batches:
      assert b['images'].shape[0] == batch_size // process_count
      seen += [int(round(v)) for v in b['images'][b['mask'], 0, 0, 0, 0]]
      assert (b['labels'][b['mask']] == (
          (b['images'][b['mask'], 0, 0, 0, 0] - 3) / 5 % 3)).all()
  assert len(set(num_batches)) == 1
  assert sorted(seen) == [5 * k + 3 for k in range(n)]


# ------------------------------------------------------------ training batches, hosts


@pytest.fixture
def constant_folder(tmp_path):
  folder = _write_folder(tmp_path / 'images', {'train': _constant_images(40),
                                               'val': _constant_images(4)})
  return _data_cfg(tmp_path, source='folder', folder=folder, lighting='none',
                   stats_file=_write_stats(tmp_path / 's.npz', np.zeros([256, 256, 3])))


def _identities(batch):
  return [int(round(v)) for v in batch['images'][:, 0, 0, 0]]


def test_process_shares_disjoint_and_complete_each_epoch(constant_folder):
  assert pipeline.steps_per_epoch(DataSpec.from_config(constant_folder), 8) == 5
  per_epoch = [[], []]
  for p in range(2):
    it = pipeline.train_batches(DataSpec.from_config(constant_folder), global_batch_size=8,
                                seed=0, process_index=p, process_count=2)
    for step in range(10):
      b = next(it)
      assert b['images'].shape == (4, 224, 224, 3) and b['labels'].dtype == np.int32
      np.testing.assert_array_equal(b['labels'], (np.array(_identities(b)) - 3) // 5 % 3)
      per_epoch[step // 5] += [(p, k) for k in _identities(b)]
  for seen in per_epoch:
    shares = [{k for q, k in seen if q == p} for p in range(2)]
    assert not shares[0] & shares[1]
    assert sorted(k for _, k in seen) == [5 * k + 3 for k in range(40)]


def test_same_seed_same_batches_and_resume(tmp_path):
  rng = np.random.default_rng(0)
  textured = [(rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8), k % 2)
              for k in range(12)]
  folder = _write_folder(tmp_path / 'images', {'train': textured, 'val': textured[:2]})
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder, lighting='paper')
  run = lambda **kw: pipeline.train_batches(DataSpec.from_config(data_cfg), global_batch_size=4,
                                            **kw)
  it = run(seed=0)
  reference = [next(it) for _ in range(8)]  # 3 steps per epoch: crosses two epochs.
  again = run(seed=0)
  for ref in reference:
    b = next(again)
    np.testing.assert_array_equal(b['images'], ref['images'])
    np.testing.assert_array_equal(b['labels'], ref['labels'])
  other = next(run(seed=1))
  assert not np.array_equal(other['images'], reference[0]['images'])
  for k in (2, 3, 5):
    resumed = run(seed=0, start_step=k)
    for ref in reference[k:]:
      b = next(resumed)
      np.testing.assert_array_equal(b['images'], ref['images'])
      np.testing.assert_array_equal(b['labels'], ref['labels'])


# ---------------------------------------------------------------------------- sources


def test_folder_corrupt_file_error_and_skip(tmp_path, caplog):
  folder = _write_folder(tmp_path / 'images', {'train': _constant_images(6),
                                               'val': _constant_images(2)})
  bad = os.path.join(folder, 'train', 'class_1', 'broken.jpg')
  with open(bad, 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 this is not a JPEG')
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder)
  with pytest.raises(sources.BadImageError, match='broken.jpg'):
    sources.dataset_info(DataSpec.from_config(data_cfg))
  data_cfg.skip_bad_files = True
  with caplog.at_level(logging.WARNING):
    info = sources.dataset_info(DataSpec.from_config(data_cfg))
  assert info.num_train == 6 and info.num_classes == 3
  assert 'Skipped 1 undecodable' in caplog.text and 'broken.jpg' in caplog.text
  assert sources.get_source(DataSpec.from_config(data_cfg)).skipped['train'] == [bad]


def test_folder_label_outside_class_range_names_file(tmp_path):
  folder = _write_folder(tmp_path / 'images', {'train': _constant_images(3),
                                               'val': _constant_images(5, num_classes=5)})
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder)
  with pytest.raises(sources.BadImageError, match=r'class_3.*img_0003\.png'):
    list(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=2, views='center'))


def test_imagenet2012_missing_manual_dir_says_what_to_do(tmp_path):
  data_cfg = _data_cfg(tmp_path, source='imagenet2012',
                       manual_dir=str(tmp_path / 'manual'))
  with pytest.raises(ValueError) as e:
    sources.dataset_info(DataSpec.from_config(data_cfg))
  message = str(e.value)
  assert isinstance(e.value, sources.ManualDownloadError)
  assert '\n' not in message
  for needed in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
                 str(tmp_path / 'manual'), 'config.data.manual_dir'):
    assert needed in message


@pytest.mark.parametrize('source', ['imagenet2012', 'imagenette'])
def test_end_to_end_under_tfds_mock_data(tmp_path, source):
  data_cfg = _data_cfg(tmp_path, source=source, flip=False, lighting='none',
                       statistics='imagenet')
  with tfds.testing.mock_data(num_examples=10):
    info = sources.dataset_info(DataSpec.from_config(data_cfg))
    assert info.num_classes == len(info.class_names) == (
        1000 if source == 'imagenet2012' else 10)
    b = next(pipeline.train_batches(DataSpec.from_config(data_cfg), global_batch_size=4, seed=0))
    ev = list(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=4,
                                    views='ten'))
  # statistics='imagenet': the ImageNet per-channel mean was subtracted, so adding it back
  # gives 0-255 pixel values.
  restored = b['images'] + statistics.IMAGENET_RGB_MEAN
  assert b['images'].shape == (4, 224, 224, 3)
  assert restored.min() >= -1e-3 and restored.max() <= 255 + 1e-3 and restored.std() > 1
  assert ((0 <= b['labels']) & (b['labels'] < info.num_classes)).all()
  assert [e['mask'].sum() for e in ev] == [4, 4, 2]
  # Reflected views are the mirror images of the first five.
  np.testing.assert_allclose(ev[0]['images'][:, 5:], ev[0]['images'][:, :5, :, ::-1])


def test_prepared_copy_is_read_instead_of_source(tmp_path):
  # 300x260 images: the prepared copy holds them resized and centre-cropped to 256.
  items = [(np.full([260, 300, 3], 10 * k + 20, np.uint8), k % 2) for k in range(6)]
  folder = _write_folder(tmp_path / 'images', {'train': items, 'val': items[:2]})
  data_cfg = _data_cfg(tmp_path, source='folder', folder=folder, lighting='none',
                       stats_file=_write_stats(tmp_path / 's.npz', np.zeros([256, 256, 3])))
  for split in ('train', 'validation'):
    sources.prepare_split(DataSpec.from_config(data_cfg), split, examples_per_shard=4)
  root = sources.prepared_dir(DataSpec.from_config(data_cfg))
  # Keyed by the folder's absolute path, so another folder never reads this copy.
  key = 'folder-images-' + hashlib.sha1(folder.encode()).hexdigest()[:10]
  assert root == str(tmp_path / 'data_dir' / 'alexnet_jax_prepared' / key)
  assert sorted(os.listdir(os.path.join(root, 'train'))) == [
      'data-00000.tfrecord', 'data-00001.tfrecord', 'info.json']
  # The original images are gone: only the prepared copy can answer.
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(folder)
  info = sources.dataset_info(DataSpec.from_config(data_cfg))
  assert (info.num_train, info.num_eval, info.class_names) == (6, 2, ['class_0', 'class_1'])
  ev = list(pipeline.eval_batches(DataSpec.from_config(data_cfg), global_batch_size=2,
                                  views='center'))
  values = ev[0]['images'][:, 0]
  np.testing.assert_allclose(values, np.broadcast_to([[[[20.]]], [[[30.]]]], values.shape),
                             atol=1.5)  # JPEG of a flat colour: within rounding.

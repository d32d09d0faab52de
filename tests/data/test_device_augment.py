"""Sec. 4.1 on the device (`config.data.augment_on='device'`) against NumPy and the host."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import alexnet_jax
from alexnet_jax import evaluate, optim, parallel, train
from alexnet_jax.config import RunSpec
from alexnet_jax.data import augment, pipeline
from alexnet_jax.data.device_augment import DeviceAugment
from alexnet_jax.data.spec import DataSpec
from alexnet_jax.data.statistics import Stats
from configs import default


def _rotation(seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  return q.astype(np.float32)


def _stats(size=256, seed=0):
  rng = np.random.default_rng(seed)
  eigval = np.array([0.05, 0.01, 0.002], np.float32)
  eigvec = _rotation(seed + 1)
  return Stats(rng.uniform(0, 120, size=(size, size, 3)).astype(np.float32), eigval, eigvec,
               255 * np.sqrt(eigval), _rotation(seed + 2))


def _spec(**kw):
  return DataSpec(**{'augment_on': 'device', **kw})


@pytest.mark.parametrize('mean_patch', ['crop', 'center'])
@pytest.mark.parametrize('lighting', ['paper', 'original', 'none'])
def test_given_offset_flip_alpha_exact_crop_lighting_and_mean(mean_patch, lighting):
  stats = _stats()
  spec = _spec(mean_patch=mean_patch, lighting=lighting, input_scale=0.5)
  device = DeviceAugment.from_spec(spec, stats, seed=0)
  image = np.random.default_rng(3).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
  alpha = np.array([0.13, -0.2, 0.07], np.float32)
  for (top, left), flip in (((0, 32), True), ((17, 5), False), ((32, 32), True)):
    # NumPy, from the paper's words (Sec. 2 mean, Sec. 4.1 crop, reflection, lighting).
    x = image.astype(np.float64)
    if mean_patch == 'crop':  # The crop's own window of the mean image.
      x = (x - stats.mean_image)[top:top + 224, left:left + 224]
    else:  # The mean image's centre crop, after the reflection.
      x = x[top:top + 224, left:left + 224]
    x = x[:, ::-1] if flip else x
    if mean_patch == 'center':
      x = x - stats.mean_image[16:240, 16:240]
    if lighting == 'paper':
      x = x + 255 * stats.eigvec.astype(np.float64) @ (alpha * stats.eigval)
    elif lighting == 'original':
      x = (x + stats.original_eigvec.astype(np.float64) @ (alpha * stats.original_stddev)) / 1.1
    expected = 0.5 * x
    got = jax.jit(device.apply)(image, jnp.array([top, left]), jnp.array(flip), alpha)
    # float32 rounding of values up to ~300: a few ulps.
    np.testing.assert_allclose(got, expected, atol=2e-4 * 300, rtol=0)
    host = augment.apply_augment(tf.constant(image, tf.float32), tf.constant([top, left]),
                                 tf.constant(flip), tf.constant(alpha), spec=spec, stats=stats)
    np.testing.assert_allclose(got, host.numpy(), atol=2e-4 * 300, rtol=0)


def test_every_offset_and_both_reflections_are_reachable():
  device = DeviceAugment.from_spec(_spec(), _stats(), seed=7)
  n = 20_000  # Each of the 1,089 offsets is missed with probability e^-18.
  offset, flip, _ = jax.jit(jax.vmap(device.draw))(jnp.full([n], 3), jnp.arange(n))
  offset, flip = np.asarray(offset), np.asarray(flip)
  assert {tuple(o) for o in offset} == {(t, l) for t in range(33) for l in range(33)}
  # A fair coin: 4 standard deviations of n draws.
  assert abs(flip.mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
  # Uniform offsets: each coordinate's mean (16) within 4 standard deviations.
  assert np.all(np.abs(offset.mean(0) - 16) < 4 * np.sqrt((33 ** 2 - 1) / 12 / n))
  # Keys come from (seed, epoch, index) only: the same draws again; another epoch differs.
  again, _, _ = jax.vmap(device.draw)(jnp.full([n], 3), jnp.arange(n))
  other, _, _ = jax.vmap(device.draw)(jnp.full([n], 4), jnp.arange(n))
  np.testing.assert_array_equal(again, offset)
  assert (np.asarray(other) != offset).any(axis=1).mean() > 0.99


@pytest.mark.parametrize('lighting', ['paper', 'original'])
def test_lighting_standard_deviation(lighting):
  stats = _stats(size=8)
  spec = _spec(stored_size=8, crop_size=4, lighting=lighting, flip=False, mean_patch='center')
  device = DeviceAugment.from_spec(
      spec, dataclasses.replace(stats, mean_image=np.zeros([8, 8, 3], np.float32)), seed=1)
  n = 20_000
  images = np.full([n, 8, 8, 3], 128, np.uint8)
  out = np.asarray(jax.jit(device)(images, jnp.zeros([n], jnp.int32), jnp.arange(n)))
  # One shift over the whole image (drawn per image, not per pixel).
  np.testing.assert_allclose(out, out[:, :1, :1] + 0 * out, atol=1e-4)
  shift = out[:, 0, 0].astype(np.float64) - 128
  if lighting == 'paper':
    coords, expected = shift @ stats.eigvec, 0.1 * 255 * stats.eigval
  else:  # The released code: (image + shift) / 1.1, shift on the 0-255 standard deviations.
    coords = ((out[:, 0, 0] * 1.1 - 128) @ stats.original_eigvec)
    expected = 0.1 * stats.original_stddev
  # The sample standard deviation of n normal draws is within 4 x 1/sqrt(2n) = 2% of sigma.
  np.testing.assert_allclose(coords.std(0), expected, rtol=4 / np.sqrt(2 * n))
  corr = np.corrcoef(coords.T)
  assert np.abs(corr[np.triu_indices(3, 1)]).max() < 4 / np.sqrt(n)


def test_ten_views_on_the_device_equal_the_host_views():
  stats = _stats()
  for mean_patch in ('crop', 'center'):
    spec = _spec(mean_patch=mean_patch, input_scale=0.25)
    device = DeviceAugment.from_spec(spec, stats, seed=0)
    images = np.random.default_rng(5).integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    for views in ('center', 'ten'):
      got = np.asarray(jax.jit(device.views, static_argnums=1)(images, views))
      host = np.stack([augment.eval_image(tf.constant(im, tf.float32), spec=spec, stats=stats,
                                          views=views).numpy() for im in images])
      np.testing.assert_allclose(got, host, atol=2e-4 * 300 * 0.25, rtol=0)


def test_pipeline_ships_stored_uint8_images_with_epoch_and_index(tmp_path):
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(8)]
  for split in ('train', 'val'):
    for i, image in enumerate(images):
      os.makedirs(tmp_path / 'images' / split / f'c{i % 2}', exist_ok=True)
      Image.fromarray(image).save(tmp_path / 'images' / split / f'c{i % 2}' / f'{i}.png')
  cfg = default.get_config().data
  cfg.update(source='folder', folder=str(tmp_path / 'images'), data_dir=str(tmp_path / 'd'),
             stored_size=32, crop_size=24, statistics='imagenet', augment_on='device')
  data = DataSpec.from_config(cfg)
  it = pipeline.train_batches(data, global_batch_size=4, seed=0)
  batches = [next(it) for _ in range(4)]  # Two epochs of two steps.
  known = {im.tobytes(): i for i, im in enumerate(images)}
  for step, b in enumerate(batches):
    assert b['images'].dtype == np.uint8 and b['images'].shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(b['epoch'], step // 2)
    # The index names the example: the folder's sorted order (class folders, then names).
    sorted_files = sorted(range(8), key=lambda i: (i % 2, i))
    for image, index, label in zip(b['images'], b['index'], b['labels']):
      i = known[image.tobytes()]
      assert sorted_files[index] == i and label == i % 2
  resumed = next(pipeline.train_batches(data, global_batch_size=4, seed=0, start_step=3))
  for k in ('images', 'labels', 'epoch', 'index'):
    np.testing.assert_array_equal(resumed[k], batches[3][k])


def test_train_step_on_the_device_equals_the_host_given_the_same_draws(small_model_config):
  config = default.get_config()
  config.model = small_model_config(num_classes=4)
  config.batch_size, config.mesh.data, config.mesh.model = 4, 2, 1
  run = RunSpec.from_config(config)
  layout = parallel.Layout.for_run(run, batch_sizes=(4,), devices=jax.devices()[:2])
  tx = optim.make_optimizer(run.optim, 10).tx
  stats = _stats()
  spec = _spec(lighting='paper')
  device = DeviceAugment.from_spec(spec, stats, seed=11)
  rng = np.random.default_rng(9)
  images = rng.integers(0, 256, size=(4, 256, 256, 3), dtype=np.uint8)
  labels = np.array([0, 1, 2, 3], np.int32)
  epoch, index = np.full([4], 2, np.int32), np.array([5, 0, 9, 3], np.int32)
  offset, flip, alpha = jax.vmap(device.draw)(epoch, index)
  host_images = np.stack([augment.apply_augment(
      tf.constant(im, tf.float32), tf.constant(np.asarray(o)), tf.constant(bool(f)),
      tf.constant(np.asarray(a)), spec=spec, stats=stats).numpy()
      for im, o, f, a in zip(images, offset, flip, alpha)])
  with jax.set_mesh(layout.mesh):
    host_state, host_metrics = train.make_train_step(layout, tx, 4)(
        train.init_state(run.seed, layout, tx), *layout.global_batch(
            {'images': host_images, 'labels': labels}).values())
    batch = layout.global_batch({'images': images, 'labels': labels, 'epoch': epoch,
                                 'index': index})
    dev_state, dev_metrics = train.make_train_step(layout, tx, 4, device)(
        train.init_state(run.seed, layout, tx), batch['images'], batch['labels'], batch['epoch'],
        batch['index'])
  np.testing.assert_allclose(dev_metrics['loss'], host_metrics['loss'], rtol=1e-5)
  for d, h in zip(jax.tree.leaves(dev_state['params']), jax.tree.leaves(host_state['params'])):
    # Inputs agree to float32 rounding; one step moves parameters by ~lr x gradient.
    np.testing.assert_allclose(d, h, atol=1e-6 + 1e-5 * np.abs(h).max())


def test_training_and_ten_view_eval_on_the_device_end_to_end(folder, tmp_path, tiny_config,
                                                             train_config):
  # The loop's wiring: the statistics pass, the uint8 feed with (epoch, index), the step,
  # and the 10 views cut by the eval step; they count what the host's views count.
  config = tiny_config(folder, **{'data.augment_on': 'device', 'num_epochs': 1,
                                  'max_steps': 2, 'eval_views': ('ten',)})
  workdir = str(tmp_path / 'run')
  summary = train_config(config, workdir)
  assert summary['step'] == 2 and np.isfinite(summary['last_loss'])
  device_result = summary['eval']['ten']
  assert device_result['examples'] == 14
  config.data.augment_on = 'host'
  run = RunSpec.from_config(config)
  layout = parallel.Layout.for_run(run)
  with jax.set_mesh(layout.mesh):
    params = jax.device_put(alexnet_jax.load_params(workdir), layout.param_shardings)
    host_result = evaluate.evaluate(params, run, layout, 'ten', show_progress=False)
  assert host_result == pytest.approx(device_result)

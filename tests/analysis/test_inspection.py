"""The notebook helpers (alexnet_jax.analysis.inspection) against independent references: `apply`
with layer=..., the TensorFlow input pipeline, NumPy slicing, and the parameter layout."""

import importlib
import json

import jax
import matplotlib
import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

import alexnet_jax
from alexnet_jax import model
from alexnet_jax.analysis import figures, inspection
from alexnet_jax.data import augment, decode
from alexnet_jax.data import statistics as statistics_lib
from alexnet_jax.rundir import checkpoints
from configs import demo


def _close(got, want):
  """Equal up to float32 rounding of the layer's largest value (the same ops, maybe fused
  differently by XLA in the two jits)."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(float(np.abs(want).max()), 1.0))


@pytest.mark.parametrize('overrides', [{}, {'lrn1_before_relu': True, 'cnorm2': True},
                                       {'remove_conv': 'conv4', 'columns': 1}])
def test_activations_equal_apply_at_every_layer(small_model_config, overrides):
  cfg = small_model_config(**overrides)
  params = alexnet_jax.init_params(jax.random.key(0), cfg)
  images = jax.random.normal(jax.random.key(1), (2, 224, 224, 3)) * 60.0
  spec = model.Spec.from_config(cfg)
  acts = alexnet_jax.activations(params, images, cfg)
  expected = [n for n in model.ACTIVATIONS if n != spec.remove_conv and (n != 'cnorm2' or spec.cnorm2)]
  assert list(acts) == expected
  for name, x in acts.items():
    _close(x, alexnet_jax.apply(params, images, cfg, layer=name))
  # Training mode: the same dropout masks as apply's with the same key.
  rng = jax.random.key(7)
  train = alexnet_jax.activations(params, images, cfg, train=True, rng=rng)
  for name in ('fc6', 'fc7', 'fc8'):
    _close(train[name], alexnet_jax.apply(params, images, cfg, layer=name, train=True, rng=rng))


def test_by_column_splits_channels_in_halves(small_model_config):
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(0), cfg)
  acts = alexnet_jax.activations(params, jax.numpy.ones((1, 224, 224, 3)), cfg)
  cols = alexnet_jax.by_column(acts, cfg)
  w1 = cfg.conv_features[0] // 2
  np.testing.assert_array_equal(cols['conv1'][0], acts['conv1'][..., :w1])
  np.testing.assert_array_equal(cols['conv1'][1], acts['conv1'][..., w1:])
  assert len(cols['fc8']) == 1  # One layer over both columns.


@pytest.mark.parametrize('overrides, readers', [
    ({}, ['conv3', 'fc6', 'fc7', 'fc8']),
    ({'remove_conv': 'conv3'}, ['conv4', 'fc6', 'fc7', 'fc8']),
    ({'lrn_across_columns': True}, ['lrn1', 'lrn2', 'conv3', 'fc6', 'fc7', 'fc8']),
])
def test_columns_exchange_only_where_the_paper_says(small_model_config, make_mesh, overrides, readers):
  cfg = small_model_config(**overrides)
  found = inspection.exchanges(cfg, make_mesh(1, 2))
  gathers = [e for e in found if e['primitive'] == 'all_gather']
  assert [e['before'] for e in gathers] == readers[:-1]
  assert all(e['axes'] == ('model',) for e in found)
  # What arrives: both columns' maps, full width (the layer table's shapes).
  f = cfg.conv_features
  shapes = {'conv3': (1, 13, 13, f[1]), 'conv4': (1, 13, 13, f[1]), 'fc6': (1, 6, 6, f[4]),
            'fc7': (1, cfg.fc_features[0]), 'fc8': (1, cfg.fc_features[1]),
            'lrn1': (1, 55, 55, f[0]), 'lrn2': (1, 27, 27, f[1])}
  assert [e['shape'] for e in gathers] == [shapes[r] for r in readers[:-1]]
  # The only other collective: before fc8, the sum of the columns' partial logits.
  assert [(e['primitive'].startswith('psum'), e['before'], e['shape'])
          for e in found if e not in gathers] == [(True, 'fc8', (1, cfg.num_classes))]


# ----------------------------------------------------------------- preprocess / deprocess


def _config(statistics='imagenet', input_scale=1.0):
  config = demo.get_config()
  config.data.statistics = statistics
  config.data.input_scale = input_scale
  return config


def test_imagenet_mean_is_the_pipelines():
  np.testing.assert_array_equal(inspection.IMAGENET_RGB_MEAN, statistics_lib.IMAGENET_RGB_MEAN)


@pytest.mark.parametrize('shape', [(300, 400), (375, 500), (700, 240), (256, 320)])
def test_preprocess_matches_the_input_pipeline(tmp_path, shape):
  rng = np.random.default_rng(shape[0])
  pixels = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
  path = tmp_path / 'image.png'
  Image.fromarray(pixels).save(path)
  config = _config(input_scale=1 / 60)
  mean = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
  got = alexnet_jax.preprocess(str(path), config, mean)
  # The pipeline's Sec. 2 resize (TensorFlow, antialiased bilinear) and eval centre view.
  square = decode.decode_stored(tf.constant(path.read_bytes()), 256).numpy()
  views = augment.eval_views(tf.constant(square - mean), 224, 'center').numpy()
  want = views[0] / 60
  assert got.shape == (224, 224, 3) and got.dtype == np.float32
  # Two resamplers of 0-255 values: float32 rounding over the filter taps, far below a level.
  np.testing.assert_allclose(got, want, rtol=0, atol=0.05 / 60)


def test_preprocess_of_a_stored_size_image_is_a_crop_and_deprocess_inverts_it():
  rng = np.random.default_rng(3)
  pixels = rng.integers(0, 256, size=(256, 300, 3), dtype=np.uint8)
  config = _config(input_scale=1 / 60)
  x = alexnet_jax.preprocess(pixels, config)
  # Shorter side already 256: the central 256 columns (22 off each side), then the central 224.
  crop = pixels[16:240, 22 + 16:22 + 240].astype(np.float32)
  np.testing.assert_allclose(x, (crop - inspection.IMAGENET_RGB_MEAN) / 60, rtol=0, atol=1e-4)
  np.testing.assert_array_equal(alexnet_jax.deprocess(x, config), pixels[16:240, 38:262])
  # The figures' display path is the same inverse.
  np.testing.assert_array_equal(figures.displayable(x[None], config)[0], pixels[16:240, 38:262])


def test_preprocess_names_a_file_that_is_not_an_image(tmp_path):
  path = tmp_path / 'notes.jpg'
  path.write_text('not an image')
  with pytest.raises(ValueError, match=r'notes\.jpg is not an image') as error:
    alexnet_jax.preprocess(str(path), _config())
  assert '\n' not in str(error.value)
  with pytest.raises(FileNotFoundError, match='missing.png'):
    alexnet_jax.preprocess(str(tmp_path / 'missing.png'), _config())


# ----------------------------------------------------------------------------- load_run


def _save(workdir, params, meta):
  with checkpoints.Checkpoints(workdir, keep=1, every=1) as ckpt:
    ckpt.save(0, {'params': params}, meta, force=True)


def test_load_run_returns_the_params_with_their_config(tmp_path, small_model_config):
  config = _config()
  config.model = small_model_config()
  params = jax.tree.map(np.asarray, alexnet_jax.init_params(jax.random.key(0), config.model))

  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=f'no checkpoint in {empty}'):
    alexnet_jax.load_run(empty)

  bare = tmp_path / 'bare'
  _save(str(bare), params, {'step': 0})
  with pytest.raises(ValueError, match=f'{bare} has no config.json and its checkpoint records no config'):
    alexnet_jax.load_run(bare)

  # A converted model: the config is in the checkpoint's meta only.
  converted = tmp_path / 'converted'
  _save(str(converted), params, {'step': 0, 'config': config.to_json()})
  got, got_config = alexnet_jax.load_run(converted)
  assert json.loads(got_config.to_json()) == json.loads(config.to_json())
  jax.tree.map(np.testing.assert_array_equal, got, params)

  # A training run: config.json wins; a config of another shape is named.
  other = _config()
  (converted / 'config.json').write_text(other.to_json())
  with pytest.raises(ValueError, match=f'The checkpoint in {converted} does not fit its config'):
    alexnet_jax.load_run(converted)
  (converted / 'config.json').write_text(config.to_json())
  _, got_config = alexnet_jax.load_run(converted)
  assert json.loads(got_config.to_json()) == json.loads(config.to_json())


def test_figures_leaves_the_matplotlib_backend_alone(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f'matplotlib.use{args} on import')
  monkeypatch.setattr(matplotlib, 'use', refuse)
  importlib.reload(figures)
  fig = figures.kernels_figure(np.random.default_rng(0).normal(size=(2, 11, 11, 3, 4)))
  assert len(fig.axes) == 2


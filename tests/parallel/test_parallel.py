"""The ('data', 'model') layout gives the same numbers as one device, forward and backward.

tests/conftest.py fakes 4 CPU devices before JAX starts; `case` and `make_mesh` are its
fixtures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import model, parallel
from tests import tolerance

MESHES = [(1, 1), (1, 2), (2, 1), (2, 2)]


def _loss_and_grads(mesh, cfg, params, images, labels, rng):
  layout = parallel.Layout(mesh, model.Spec.from_config(cfg), batch_sizes=(images.shape[0],))
  fn = jax.jit(jax.value_and_grad(layout.loss(images.shape[0]), has_aux=True))
  (value, errors), grads = fn(layout.shard_params(params),
                              jax.device_put(images, layout.batch_sharding),
                              jax.device_put(labels, layout.batch_sharding),
                              jax.device_put(rng, layout.replicated))
  return float(value), jax.tree.map(float, errors), jax.tree.map(np.asarray, grads)


def _reference_loss(params, images, labels, cfg, rng):
  """Cross-entropy of the one-device `apply`, by hand (NumPy-style) log-softmax."""
  logits = alexnet_jax.apply(params, images, cfg, train=True, rng=rng)
  logz = jnp.log(jnp.sum(jnp.exp(logits - logits.max(-1, keepdims=True)), -1)) + logits.max(-1)
  return jnp.mean(logz - logits[jnp.arange(len(labels)), labels])


@pytest.mark.parametrize('train', [False, True])
def test_forward_is_layout_independent(case, make_mesh, train):
  cfg, params, images, _ = case
  rng = jax.random.key(5)
  ref = np.asarray(alexnet_jax.apply(params, images, cfg, train=train, rng=rng))
  assert ref.std() > 1e-2
  for shape in MESHES:
    out = parallel.apply(params, images, cfg, make_mesh(*shape), train=train, rng=rng)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0,
                               atol=tolerance.atol(tolerance.longest_sum(params), ref),
                               err_msg=str(shape))
    fc7 = parallel.apply(params, images, cfg, make_mesh(*shape), train=train, rng=rng, layer='fc7')
    ref7 = np.asarray(alexnet_jax.apply(params, images, cfg, train=train, rng=rng, layer='fc7'))
    np.testing.assert_allclose(np.asarray(fc7), ref7, rtol=0,
                               atol=tolerance.atol(tolerance.longest_sum(params), ref7))


def test_gradients_are_layout_independent(case, make_mesh):
  cfg, params, images, labels = case
  rng = jax.random.key(6)
  # Independent reference: jax.grad of the one-device network, no shard_map involved.
  ref_value, ref_grads = jax.value_and_grad(_reference_loss)(params, images, labels, cfg, rng)
  ref_grads = jax.tree.map(np.asarray, ref_grads)
  terms = tolerance.longest_sum(params, batch_size=len(images), image_size=images.shape[1])
  for shape in MESHES:
    value, errors, grads = _loss_and_grads(make_mesh(*shape), cfg, params, images, labels, rng)
    np.testing.assert_allclose(value, float(ref_value), rtol=0,
                               atol=tolerance.atol(terms, float(ref_value)))
    for name in model.LAYERS:
      for leaf in ('kernel', 'bias'):
        g, r = grads[name][leaf], ref_grads[name][leaf]
        assert np.abs(r).max() > 0, (name, leaf)
        np.testing.assert_allclose(g, r, rtol=0, atol=tolerance.atol(terms, r),
                                   err_msg=f'{shape} {name} {leaf}')
    assert 0.0 <= errors['top5_error'] <= errors['top1_error'] <= 1.0


def test_eval_mode_gradients_and_errors_match_numpy(case, make_mesh, small_model_config):
  # Without dropout the top-1 / top-5 errors can be checked against NumPy directly.
  cfg, params, images, labels = case
  cfg = small_model_config(dropout_rate=0.0)
  logits = np.asarray(alexnet_jax.apply(params, images, cfg))
  order = np.argsort(-logits, axis=-1)
  top1 = np.mean(order[:, 0] != np.asarray(labels))
  top5 = np.mean([lab not in row[:5] for lab, row in zip(np.asarray(labels), order)])
  for shape in MESHES:
    _, errors, _ = _loss_and_grads(make_mesh(*shape), cfg, params, images, labels,
                                   jax.random.key(0))
    assert errors['top1_error'] == pytest.approx(top1)
    assert errors['top5_error'] == pytest.approx(top5)


def test_ten_view_probabilities_average_softmax(case, make_mesh):
  cfg, params, images, _ = case
  views = jnp.stack([images, images[:, :, ::-1], images * 0.5], axis=1)  # [4, 3, 224, 224, 3]
  expected = np.mean([jax.nn.softmax(alexnet_jax.apply(params, views[:, v], cfg)) for v in range(3)], axis=0)
  for shape in MESHES:
    layout = parallel.Layout(make_mesh(*shape), model.Spec.from_config(cfg))
    probs = jax.jit(layout.view_probs())(
        layout.shard_params(params), jax.device_put(views, layout.batch_sharding))
    np.testing.assert_allclose(np.asarray(probs), expected, rtol=1e-4, atol=1e-6)


def test_bad_layouts_are_clear_errors(case, make_mesh, small_model_config):
  cfg, params, images, _ = case
  with pytest.raises(ValueError, match='model axis .* must be 1 or 2'):
    parallel.make_mesh(1, 4)
  four = jax.make_mesh((1, 4), parallel.AXES, devices=jax.devices()[:4])
  with pytest.raises(ValueError, match='must be 1 or 2, got 4'):
    parallel.apply(params, images, cfg, four)
  with pytest.raises(ValueError, match='batch of 3 is not divisible by the data axis of 2'):
    parallel.apply(params, images[:3], cfg, make_mesh(2, 1))
  one_column = small_model_config(columns=1)
  with pytest.raises(ValueError, match='1-column model cannot be split'):
    parallel.apply(alexnet_jax.init_params(jax.random.key(0), one_column), images, one_column,
                   make_mesh(1, 2))
  with pytest.raises(ValueError, match='needs 8 devices'):
    parallel.make_mesh(4, 2)

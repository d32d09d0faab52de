"""The pmap mapper gives the shard_map path's numbers, forward and backward.

The reference is the shard_map path (itself tested against one device in
test_parallel.py). tests/conftest.py fakes 4 CPU devices before JAX starts; `case` and
`make_mesh` are its fixtures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import model, parallel
from tests import tolerance

# The layouts pmap expresses: the paper's two columns on two devices, and data parallelism.
MESHES = [(1, 2), (2, 1), (4, 1)]


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('shape', MESHES)
def test_forward_equals_shard_map(case, make_mesh, shape, train):
  cfg, params, images, _ = case
  mesh, rng = make_mesh(*shape), jax.random.key(5)
  for layer in (None, 'fc7'):  # fc7: after dropout, so the masks must agree too.
    ref = np.asarray(parallel.apply(params, images, cfg, mesh, train=train, rng=rng, layer=layer))
    out = np.asarray(parallel.apply(params, images, cfg, mesh, train=train, rng=rng, layer=layer,
                                    mapper='pmap'))
    assert ref.std() > 1e-2
    np.testing.assert_allclose(out, ref, rtol=0,
                               atol=tolerance.atol(tolerance.longest_sum(params), ref),
                               err_msg=f'{shape} {layer}')


@pytest.mark.parametrize('shape', MESHES[:2])
def test_loss_gradients_equal_shard_map(case, make_mesh, shape):
  cfg, params, images, labels = case
  mesh, spec, rng = make_mesh(*shape), model.Spec.from_config(cfg), jax.random.key(6)
  results = {}
  for mapper in parallel.MAPPERS:
    layout = parallel.Layout(mesh, spec, batch_sizes=(4,), mapper=mapper)
    fn = jax.jit(jax.value_and_grad(layout.loss(4), has_aux=True))
    (value, errors), grads = fn(layout.shard_params(params),
                                jax.device_put(images, layout.batch_sharding),
                                jax.device_put(labels, layout.batch_sharding),
                                jax.device_put(rng, layout.replicated))
    results[mapper] = float(value), jax.tree.map(float, errors), jax.tree.map(np.asarray, grads)
  (ref_value, ref_errors, ref_grads), (value, errors, grads) = results['shard_map'], results['pmap']
  terms = tolerance.longest_sum(params, batch_size=len(images), image_size=images.shape[1])
  np.testing.assert_allclose(value, ref_value, rtol=0, atol=tolerance.atol(terms, ref_value))
  assert errors == pytest.approx(ref_errors)
  for name in model.LAYERS:
    for leaf in ('kernel', 'bias'):
      g, r = grads[name][leaf], ref_grads[name][leaf]
      assert g.shape == r.shape and np.abs(r).max() > 0, (name, leaf)
      np.testing.assert_allclose(g, r, rtol=0, atol=tolerance.atol(terms, r),
                                 err_msg=f'{shape} {name} {leaf}')


@pytest.mark.parametrize('shape', MESHES[:2])
def test_view_probs_equal_shard_map_inside_the_run_mesh(case, make_mesh, shape):
  # As evaluation runs it: under jax.set_mesh, on global arrays, counted by error_counts.
  from alexnet_jax import evaluate  # pylint: disable=g-import-not-at-top
  cfg, params, images, labels = case
  mesh, spec = make_mesh(*shape), model.Spec.from_config(cfg)
  views = jnp.stack([images, images[:, :, ::-1]], axis=1)  # [4, 2, 224, 224, 3]
  results = {}
  with jax.set_mesh(mesh):
    for mapper in parallel.MAPPERS:
      layout = parallel.Layout(mesh, spec, batch_sizes=(4,), mapper=mapper)

      def step(params, views, labels, probs_fn=layout.view_probs()):
        probs = probs_fn(params, views)
        return probs, evaluate.error_counts(probs, labels, jnp.ones(labels.shape, bool))

      probs, counts = jax.jit(step)(layout.shard_params(params),
                                    jax.device_put(views, layout.batch_sharding),
                                    jax.device_put(labels, layout.batch_sharding))
      results[mapper] = np.asarray(probs), np.asarray(counts)
  (ref_probs, ref_counts), (probs, counts) = results['shard_map'], results['pmap']
  assert ref_probs.shape == (4, 10) and ref_probs.std() > 1e-3
  # Softmax moves a probability by at most twice the largest change of a logit
  # (|dp_i| = p_i |dz_i - sum_j p_j dz_j|), so the logits' tolerance, doubled, bounds the
  # views' mean probabilities.
  logits = np.asarray(parallel.apply(params, views.reshape(-1, *views.shape[2:]), cfg, mesh))
  np.testing.assert_allclose(
      probs, ref_probs, rtol=0,
      atol=2 * tolerance.atol(tolerance.longest_sum(params), logits))
  np.testing.assert_array_equal(counts, ref_counts)


def test_layouts_pmap_cannot_express_are_clear_errors(case, make_mesh):
  cfg, params, images, _ = case
  spec = model.Spec.from_config(cfg)
  with pytest.raises(ValueError, match=r"mapper='pmap' maps one axis, but the mesh is 2x2"):
    parallel.Layout(make_mesh(2, 2), spec, mapper='pmap')
  with pytest.raises(ValueError, match=r"mapper='pmap' maps one axis"):
    parallel.apply(params, images, cfg, make_mesh(2, 2), mapper='pmap')
  with pytest.raises(ValueError, match='mapper must be one of'):
    parallel.Layout(make_mesh(1, 1), spec, mapper='xmap')

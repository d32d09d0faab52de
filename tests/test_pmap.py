"""The pmap mapper gives the shard_map path's numbers, forward and backward.

The reference is the shard_map path (itself tested against one device in
test_parallel.py). tests/conftest.py fakes 4 CPU devices before JAX starts.
"""

import jax
import numpy as np
import pytest

from alexnet_jax import model, parallel
from tests.test_parallel import _mesh, case  # pylint: disable=unused-import (a fixture)

# The layouts pmap expresses: the paper's two columns on two devices, and data parallelism.
MESHES = [(1, 2), (2, 1), (4, 1)]


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('shape', MESHES)
def test_forward_equals_shard_map(case, shape, train):
  cfg, params, images, _ = case
  mesh, rng = _mesh(*shape), jax.random.key(5)
  for layer in (None, 'fc7'):  # fc7: after dropout, so the masks must agree too.
    ref = np.asarray(parallel.apply(params, images, cfg, mesh, train=train, rng=rng, layer=layer))
    out = np.asarray(parallel.apply(params, images, cfg, mesh, train=train, rng=rng, layer=layer,
                                    mapper='pmap'))
    assert ref.std() > 1e-2
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                               err_msg=f'{shape} {layer}')


@pytest.mark.parametrize('shape', MESHES[:2])
def test_loss_gradients_equal_shard_map(case, shape):
  cfg, params, images, labels = case
  mesh, spec, rng = _mesh(*shape), model.Spec.from_config(cfg), jax.random.key(6)
  results = {}
  for mapper in parallel.MAPPERS:
    fn = jax.jit(jax.value_and_grad(parallel.sharded_loss(mesh, spec, 4, mapper=mapper),
                                    has_aux=True))
    (value, errors), grads = fn(parallel.shard_params(params, mesh, spec),
                                jax.device_put(images, parallel.batch_sharding(mesh)),
                                jax.device_put(labels, parallel.batch_sharding(mesh)),
                                jax.device_put(rng, parallel.replicated(mesh)))
    results[mapper] = float(value), jax.tree.map(float, errors), jax.tree.map(np.asarray, grads)
  (ref_value, ref_errors, ref_grads), (value, errors, grads) = results['shard_map'], results['pmap']
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert errors == pytest.approx(ref_errors)
  for name in model.LAYERS:
    for leaf in ('kernel', 'bias'):
      g, r = grads[name][leaf], ref_grads[name][leaf]
      assert g.shape == r.shape and np.abs(r).max() > 0, (name, leaf)
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max(),
                                 err_msg=f'{shape} {name} {leaf}')


def test_layouts_pmap_cannot_express_are_clear_errors(case):
  cfg, params, images, _ = case
  spec = model.Spec.from_config(cfg)
  with pytest.raises(ValueError, match=r"mapper='pmap' maps one axis, but the mesh is 2x2"):
    parallel.sharded_loss(_mesh(2, 2), spec, 4, mapper='pmap')
  with pytest.raises(ValueError, match=r"mapper='pmap' maps one axis"):
    parallel.apply(params, images, cfg, _mesh(2, 2), mapper='pmap')
  with pytest.raises(ValueError, match='mapper must be one of'):
    parallel.sharded_loss(_mesh(1, 1), spec, 4, mapper='xmap')

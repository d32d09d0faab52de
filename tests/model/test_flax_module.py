"""`alexnet_jax.AlexNet`, the Flax linen module: its init, its apply and its table."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import model
from alexnet_jax.model import summary
from tests import tolerance


def test_init_gives_the_pinned_layout():
  cfg = alexnet_jax.model_config()
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(alexnet_jax.AlexNet(cfg).init, jax.random.key(0), images)
  assert set(variables) == {'params'}  # No state besides the parameters.
  got = {name: {leaf: tuple(v.shape) for leaf, v in layer.items()}
         for name, layer in variables['params'].items()}
  # The README's table, written out: column axis first, fc8 one layer.
  assert got == {
      'conv1': {'kernel': (2, 11, 11, 3, 48), 'bias': (2, 48)},
      'conv2': {'kernel': (2, 5, 5, 48, 128), 'bias': (2, 128)},
      'conv3': {'kernel': (2, 3, 3, 256, 192), 'bias': (2, 192)},
      'conv4': {'kernel': (2, 3, 3, 192, 192), 'bias': (2, 192)},
      'conv5': {'kernel': (2, 3, 3, 192, 128), 'bias': (2, 128)},
      'fc6': {'kernel': (2, 9216, 2048), 'bias': (2, 2048)},
      'fc7': {'kernel': (2, 4096, 2048), 'bias': (2, 2048)},
      'fc8': {'kernel': (4096, 1000), 'bias': (1000,)},
  }
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))


@pytest.mark.parametrize('overrides', [{}, {'columns': 1}, {'remove_conv': 'conv4'},
                                       {'image_size': 227, 'init': 'caffe'}])
def test_init_equals_init_params_and_param_shapes(small_model_config, overrides):
  cfg = small_model_config(**overrides)
  spec = model.Spec.from_config(cfg)
  images = jnp.zeros((1, spec.image_size, spec.image_size, 3))
  params = alexnet_jax.AlexNet(cfg).init(jax.random.key(3), images)['params']
  shapes = jax.tree.map(lambda x: tuple(x.shape), params)
  assert shapes == alexnet_jax.param_shapes(cfg)
  wrapped = alexnet_jax.init_params(jax.random.key(3), cfg)  # Jitted: last-bit rounding.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), params, wrapped)
  # Sec. 5 (or Caffe's) distributions, layer by layer, from the module's own init.
  for name in spec.layers:
    std, bias = model.init_scheme(spec, name, shapes[name]['kernel'])
    np.testing.assert_array_equal(np.asarray(params[name]['bias']), np.float32(bias))
    kernel = np.asarray(params[name]['kernel'])
    assert abs(kernel.std() - std) < 0.1 * std and abs(kernel.mean()) < 0.1 * std, name


@pytest.mark.parametrize('train,layer', [(False, None), (True, None), (False, 'pool2'),
                                         (True, 'fc7')])
def test_module_apply_equals_the_functional_apply(small_model_config, train, layer):
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(0), cfg)
  params = jax.tree.map(lambda p: 8.0 * p, params)  # Every layer matters to the logits.
  images = jax.random.normal(jax.random.key(1), (3, 224, 224, 3)) * 60.0
  key = jax.random.key(2)
  ours = alexnet_jax.AlexNet(cfg).apply({'params': params}, images, train=train, layer=layer,
                                         rngs={'dropout': key})
  wrapper = alexnet_jax.apply(params, images, cfg, train=train, layer=layer, rng=key)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(wrapper), rtol=0,
                             atol=tolerance.atol(tolerance.longest_sum(params), wrapper))
  if train:  # Dropout was applied: another key gives other outputs.
    other = alexnet_jax.AlexNet(cfg).apply({'params': params}, images, train=True, layer=layer,
                                           rngs={'dropout': jax.random.key(9)})
    assert not np.allclose(np.asarray(other), np.asarray(ours))


def test_tabulate_counts_the_papers_parameters():
  text = summary.table(model.Spec.from_config(alexnet_jax.model_config()), compute_flops=False)
  total = re.search(r'Total Parameters: ([\d,]+)', text).group(1)
  assert int(total.replace(',', '')) == 60_965_224
  # One row per learned layer, named as in the params pytree.
  for name in model.LAYERS:
    assert re.search(rf'^│ {name} ', text, re.MULTILINE), name

"""The network against the paper's numbers and against independent reference code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import model
from alexnet_jax.model import layers


def test_parameter_count_is_the_papers():
  # Sec. 3.5 / Fig. 2's layers: 60,965,224, summed by hand per layer in test_layout below.
  shapes = alexnet_jax.param_shapes(alexnet_jax.model_config())
  total = sum(int(np.prod(s)) for layer in shapes.values() for s in layer.values())
  assert total == 60_965_224
  params = alexnet_jax.init_params(jax.random.key(0), alexnet_jax.model_config())
  assert alexnet_jax.count_params(params) == 60_965_224


def test_layout():
  params = jax.eval_shape(lambda k: alexnet_jax.init_params(k, alexnet_jax.model_config()), jax.random.key(0))
  got = {name: {leaf: tuple(v.shape) for leaf, v in layer.items()} for name, layer in params.items()}
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
  # The hand sum of the same table: 2*(11*11*3*48 + 48) + ... + 4096*1000 + 1000.
  by_hand = (2 * (11 * 11 * 3 * 48 + 48) + 2 * (5 * 5 * 48 * 128 + 128) + 2 * (3 * 3 * 256 * 192 + 192)
             + 2 * (3 * 3 * 192 * 192 + 192) + 2 * (3 * 3 * 192 * 128 + 128)
             + 2 * (9216 * 2048 + 2048) + 2 * (4096 * 2048 + 2048) + 4096 * 1000 + 1000)
  assert by_hand == 60_965_224


def test_one_column_ablation_layout():
  # Sec. 3.2: half the kernels in conv1-conv4, but the full conv5 and fc layers.
  cfg = alexnet_jax.model_config()
  cfg.columns = 1
  shapes = alexnet_jax.param_shapes(cfg)
  assert shapes['conv1']['kernel'] == (1, 11, 11, 3, 48)
  assert shapes['conv3']['kernel'] == (1, 3, 3, 128, 192)
  assert shapes['conv5']['kernel'] == (1, 3, 3, 192, 256)
  assert shapes['fc6']['kernel'] == (1, 9216, 4096)
  assert shapes['fc7']['kernel'] == (1, 4096, 4096)
  total = sum(int(np.prod(s)) for layer in shapes.values() for s in layer.values())
  assert total == (11 * 11 * 3 * 48 + 48 + 5 * 5 * 48 * 128 + 128 + 3 * 3 * 128 * 192 + 192
                   + 3 * 3 * 192 * 192 + 192 + 3 * 3 * 192 * 256 + 256 + 9216 * 4096 + 4096
                   + 4096 * 4096 + 4096 + 4096 * 1000 + 1000)


@pytest.mark.parametrize('image_size,pool_window', [(224, 3), (227, 3), (224, 2)])
def test_every_layer_output_shape(image_size, pool_window):
  # Sec. 3.5 / Fig. 2: 224 -> 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6, also for 227 input and
  # for the non-overlapping 2/2 pooling ablation (floor((55 - 2) / 2) + 1 = 27 too).
  cfg = alexnet_jax.model_config()
  cfg.image_size = image_size
  cfg.pool_window = pool_window
  params = jax.eval_shape(lambda k: alexnet_jax.init_params(k, cfg), jax.random.key(0))
  images = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
  expected = {'conv1': (55, 55, 96), 'lrn1': (55, 55, 96), 'pool1': (27, 27, 96),
              'conv2': (27, 27, 256), 'lrn2': (27, 27, 256), 'pool2': (13, 13, 256),
              'conv3': (13, 13, 384), 'conv4': (13, 13, 384), 'conv5': (13, 13, 256),
              'pool5': (6, 6, 256), 'fc6': (4096,), 'fc7': (4096,), 'fc8': (1000,)}
  for layer, shape in expected.items():
    out = jax.eval_shape(lambda p, x: model.forward(p, x, model.Spec.from_config(cfg), layer=layer),
                         params, images)
    assert out.shape == (2,) + shape, layer
  assert model.conv1_padding(224) == (0, 3)
  assert model.conv1_padding(227) == (0, 0)


def test_lrn_matches_tensorflow_per_column(small_model_config):
  tf = pytest.importorskip('tensorflow')
  rng = np.random.default_rng(0)
  a = rng.normal(0, 30, size=(2, 7, 7, 48)).astype(np.float32)  # Activations of one column.
  ours = model.local_response_norm(jnp.asarray(a), k=2.0, n=5, alpha=1e-4, beta=0.75)
  theirs = tf.nn.local_response_normalization(a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-5, atol=1e-5)
  # Inside the network LRN never crosses columns: lrn1 of the two-column net equals TF's
  # LRN applied to each column's 48 channels separately.
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(1), cfg)
  images = jnp.asarray(rng.normal(0, 60, size=(2, 224, 224, 3)), jnp.float32)
  relu1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv1'))
  lrn1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='lrn1'))
  half = relu1.shape[-1] // 2
  for col in (slice(0, half), slice(half, None)):
    ref = tf.nn.local_response_normalization(relu1[..., col], depth_radius=2, bias=2.0,
                                             alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(lrn1[..., col], ref, rtol=1e-5, atol=1e-5)


def _grouped_reference(params, images, cfg):
  """The two-column net written the usual one-tower way: grouped convolutions
  (feature_group_count=2) where a layer reads its own column, with the columns' kernels
  concatenated; LRN by explicit shifted sums within each group."""

  def cat(name):  # [2, ..., out] -> [..., 2 * out], column 0's outputs first.
    k = params[name]['kernel']
    return jnp.concatenate([k[0], k[1]], axis=-1), jnp.concatenate([params[name]['bias'][0],
                                                                    params[name]['bias'][1]])

  def conv(x, name, stride, pad, groups):
    k, b = cat(name)
    y = jax.lax.conv_general_dilated(x, k, (stride, stride), pad, feature_group_count=groups,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     precision=jax.lax.Precision.HIGHEST)
    return jax.nn.relu(y + b)

  def lrn_grouped(a):
    out = []
    for g in jnp.split(a, 2, axis=-1):
      sq = jnp.pad(g * g, ((0, 0), (0, 0), (0, 0), (2, 2)))
      window = sum(sq[..., i:i + g.shape[-1]] for i in range(5))
      out.append(g / (2.0 + 1e-4 * window) ** 0.75)
    return jnp.concatenate(out, axis=-1)

  def pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), 'VALID')

  x = conv(images, 'conv1', 4, ((0, 3), (0, 3)), 1)
  x = pool(lrn_grouped(x))
  x = pool(lrn_grouped(conv(x, 'conv2', 1, ((2, 2), (2, 2)), 2)))
  x = conv(x, 'conv3', 1, ((1, 1), (1, 1)), 1)
  x = conv(x, 'conv4', 1, ((1, 1), (1, 1)), 2)
  x = pool(conv(x, 'conv5', 1, ((1, 1), (1, 1)), 2))
  x = x.reshape(x.shape[0], -1)
  for name in ('fc6', 'fc7'):
    k, b = cat(name)
    x = 0.5 * jax.nn.relu(x @ k + b)  # Test-time dropout: outputs times 0.5.
  return x @ params['fc8']['kernel'] + params['fc8']['bias']


def test_two_columns_equal_grouped_convolution_reference(small_model_config):
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(2), cfg)
  # Larger weights than the init so that every layer's output matters to the logits.
  params = jax.tree.map(lambda p: p * 8.0, params)
  images = jax.random.normal(jax.random.key(3), (3, 224, 224, 3)) * 60.0
  ours = alexnet_jax.apply(params, images, cfg)
  ref = jax.jit(lambda p, x: _grouped_reference(p, x, cfg))(params, images)
  assert float(jnp.std(ref)) > 1e-2
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=2e-4, atol=2e-4 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize('form', ['paper', 'inverted'])
def test_dropout(form, small_model_config):
  cfg = small_model_config(fc_features=(2048, 2048), dropout_form=form)
  params = alexnet_jax.init_params(jax.random.key(4), cfg)
  images = jax.random.normal(jax.random.key(5), (8, 224, 224, 3)) * 60.0
  no_dropout = small_model_config(fc_features=(2048, 2048), dropout_rate=0.0)
  for layer in ('fc6', 'fc7'):
    train = np.asarray(alexnet_jax.apply(params, images, cfg, train=True, rng=jax.random.key(6), layer=layer))
    test = np.asarray(alexnet_jax.apply(params, images, cfg, layer=layer))
    if layer == 'fc6':
      full = np.asarray(alexnet_jax.apply(params, images, no_dropout, layer='fc6'))
      kept_scale, test_scale = (1.0, 0.5) if form == 'paper' else (2.0, 1.0)
      np.testing.assert_allclose(test, test_scale * full, rtol=1e-6)
      alive = full > 0  # Biases of 1 keep almost every ReLU on.
      assert alive.mean() > 0.9
      kept = train[alive] != 0
      # Each of ~16k neurons dropped with p = 0.5: 5 sigma of a binomial is about 0.02.
      assert abs(kept.mean() - 0.5) < 0.02
      np.testing.assert_allclose(train[alive][kept], kept_scale * full[alive][kept], rtol=1e-6)
    else:
      # fc7's input varies with fc6's mask, so only the rate is checked: half dropped,
      # plus half of the neurons whose ReLU is off anyway (measured in test mode).
      relu_off = (test == 0).mean()
      assert abs((train == 0).mean() - (0.5 + 0.5 * relu_off)) < 0.04
  # Different examples get different masks; the same rng gives the same masks.
  again = np.asarray(alexnet_jax.apply(params, images, cfg, train=True, rng=jax.random.key(6), layer='fc6'))
  first = np.asarray(alexnet_jax.apply(params, images, cfg, train=True, rng=jax.random.key(6), layer='fc6'))
  np.testing.assert_array_equal(again, first)
  assert ((first[0] == 0) != (first[1] == 0)).mean() > 0.3


def test_init_follows_the_paper():
  params = alexnet_jax.init_params(jax.random.key(7), alexnet_jax.model_config())
  for name in model.LAYERS:
    bias = 1.0 if name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7') else 0.0
    np.testing.assert_array_equal(np.asarray(params[name]['bias']), bias)
    kernel = np.asarray(params[name]['kernel'])
    assert abs(kernel.std() - 0.01) < 0.01 * 0.05, name
    assert abs(kernel.mean()) < 0.001, name
  cfg = alexnet_jax.model_config()
  cfg.init = 'caffe'
  caffe = alexnet_jax.init_params(jax.random.key(7), cfg)
  assert abs(float(caffe['fc6']['kernel'].std()) - 0.005) < 0.0002
  np.testing.assert_array_equal(np.asarray(caffe['conv2']['bias']), np.float32(0.1))


def test_tanh_and_no_lrn_switches_change_the_network(small_model_config):
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(8), cfg)
  images = jax.random.normal(jax.random.key(9), (2, 224, 224, 3)) * 60.0
  relu1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv1'))
  tanh = small_model_config(activation='tanh')
  np.testing.assert_allclose(
      np.asarray(alexnet_jax.apply(params, images, tanh, layer='conv1')),
      np.tanh(np.asarray(jax.lax.conv_general_dilated(
          images, jnp.concatenate([params['conv1']['kernel'][0], params['conv1']['kernel'][1]], -1),
          (4, 4), ((0, 3), (0, 3)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          precision=jax.lax.Precision.HIGHEST))), rtol=1e-4, atol=1e-5)
  no_lrn = np.asarray(alexnet_jax.apply(params, images, small_model_config(lrn=False),
                                        layer='lrn1'))
  np.testing.assert_array_equal(no_lrn, relu1)


def test_bad_input_is_a_clear_error(small_model_config):
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(0), cfg)
  with pytest.raises(ValueError, match='224x224'):
    alexnet_jax.apply(params, jnp.zeros((1, 200, 200, 3)), cfg)
  with pytest.raises(ValueError, match='shape'):
    alexnet_jax.apply(params, jnp.zeros((224, 224, 3)), cfg)
  with pytest.raises(ValueError, match='3 \\(RGB\\) channels'):
    alexnet_jax.apply(params, jnp.zeros((1, 224, 224, 1)), cfg)
  bad = jax.tree.map(lambda x: x, params)
  bad['fc8']['kernel'] = jnp.zeros((32, 1000))
  with pytest.raises(ValueError, match=r"params\['fc8'\]\['kernel'\] has shape \(32, 1000\)"):
    alexnet_jax.apply(bad, jnp.zeros((1, 224, 224, 3)), cfg)
  del bad['fc8']
  with pytest.raises(ValueError, match='layers'):
    alexnet_jax.apply(bad, jnp.zeros((1, 224, 224, 3)), cfg)
  with pytest.raises(ValueError, match='rng'):
    alexnet_jax.apply(params, jnp.zeros((1, 224, 224, 3)), cfg, train=True)
  with pytest.raises(ValueError, match='layer must be one of'):
    alexnet_jax.apply(params, jnp.zeros((1, 224, 224, 3)), cfg, layer='fc9')
  with pytest.raises(ValueError, match='columns must be 1 or 2'):
    alexnet_jax.init_params(jax.random.key(0), small_model_config(columns=3))


@pytest.mark.parametrize('layer', [None, 'fc7'])
def test_empty_batch_is_a_clear_error(layer, small_model_config):
  cfg = small_model_config()
  params = alexnet_jax.init_params(jax.random.key(0), cfg)
  with pytest.raises(ValueError) as info:
    alexnet_jax.apply(params, jnp.zeros((0, 224, 224, 3)), cfg, layer=layer)
  message = str(info.value)
  assert '\n' not in message and 'empty' in message and '0 images' in message


@pytest.mark.parametrize('window,stride,size', [(3, 2, 27), (3, 2, 55), (3, 2, 13), (2, 2, 27),
                                                (2, 2, 26), (3, 3, 14), (5, 2, 16)])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_gradient_matches_autodiff(window, stride, size, ties):
  # max_pool carries its own VJP (faster on XLA:CPU); autodiff of reduce_window
  # (select_and_scatter) is the independent reference, ties included: values rounded to a
  # few levels make many windows hold their maximum twice, and both give it to the first.
  rng = np.random.default_rng(size * 10 + window + stride)
  x = rng.normal(0, 20, size=(2, size, size, 8))
  x = jnp.asarray(np.round(x / 20) if ties else x, jnp.float32)
  out = (size - window) // stride + 1
  g = jnp.asarray(rng.normal(size=(2, out, out, 8)), jnp.float32)

  def plain_pool(v):
    return jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), 'VALID')

  ours = jax.grad(lambda v: jnp.sum(model.max_pool(v, window, stride) * g))(x)
  ref = jax.grad(lambda v: jnp.sum(plain_pool(v) * g))(x)
  # Equal up to the order of float32 sums where windows overlap.
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('beta', [0.75, 0.5])
def test_lrn_gradient_matches_autodiff(beta):
  # local_response_norm carries its own VJP, and computes the paper's power 0.75 with
  # square roots; autodiff of the plain formula is the independent reference.
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.normal(0, 20, size=(2, 27, 27, 16)), jnp.float32)

  def plain_lrn(a):
    sq = jnp.pad(a * a, ((0, 0), (0, 0), (0, 0), (2, 2)))
    window = sum(sq[..., i:i + a.shape[-1]] for i in range(5))
    return a / (2.0 + 1e-4 * window) ** beta

  def ours_lrn(a):
    return model.local_response_norm(a, k=2.0, n=5, alpha=1e-4, beta=beta)

  np.testing.assert_allclose(np.asarray(ours_lrn(x)), np.asarray(plain_lrn(x)), rtol=1e-6, atol=1e-6)
  gl = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  ours = jax.grad(lambda a: jnp.sum(ours_lrn(a) * gl))(x)
  ref = jax.grad(lambda a: jnp.sum(plain_lrn(a) * gl))(x)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('removed', ['conv3', 'conv4', 'conv5'])
def test_removing_a_middle_conv_layer(removed):
  # Sec. 7's depth ablation: the next layer reads what the removed one read.
  cfg = alexnet_jax.model_config()
  cfg.remove_conv = removed
  shapes = alexnet_jax.param_shapes(cfg)
  assert removed not in shapes
  expected = {'conv3': {'conv4': (2, 3, 3, 256, 192), 'fc6': (2, 9216, 2048)},
              'conv4': {'conv5': (2, 3, 3, 192, 128), 'fc6': (2, 9216, 2048)},
              'conv5': {'conv4': (2, 3, 3, 192, 192), 'fc6': (2, 6 * 6 * 384, 2048)}}[removed]
  for name, shape in expected.items():
    assert shapes[name]['kernel'] == shape, name
  with pytest.raises(ValueError, match='removed'):
    alexnet_jax.apply(alexnet_jax.init_params(jax.random.key(0), cfg), jnp.zeros((1, 224, 224, 3)),
                      cfg, layer=removed)


def test_without_conv4_conv5_reads_conv3(small_model_config):
  cfg = small_model_config(remove_conv='conv4')
  params = jax.tree.map(lambda p: p * 8.0, alexnet_jax.init_params(jax.random.key(12), cfg))
  images = jax.random.normal(jax.random.key(13), (2, 224, 224, 3)) * 60.0
  conv3 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv3'))
  conv5 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv5'))
  half = conv3.shape[-1] // 2
  for c in range(2):  # Each column's conv5 reads its own column's conv3 maps.
    ref = jax.lax.conv_general_dilated(conv3[..., c * half:(c + 1) * half], params['conv5']['kernel'][c],
                                       (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                       precision=jax.lax.Precision.HIGHEST)
    ref = np.maximum(np.asarray(ref) + np.asarray(params['conv5']['bias'][c]), 0)
    out = conv5[..., c * ref.shape[-1]:(c + 1) * ref.shape[-1]]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize('channels, n', [(48, 5), (7, 5), (4, 3), (3, 7)])
def test_lrn_window_sum_on_every_backend_matches_numpy(channels, n):
  """Both window sums (CPU's band matmul, the shifted slices of other backends) against a
  NumPy loop over each channel's neighbours."""
  x = np.random.default_rng(channels).normal(size=(2, 3, channels)).astype(np.float32)
  want = np.stack([x[..., max(0, i - n // 2):i + n // 2 + 1].sum(-1) for i in range(channels)], -1)
  for window_sum in (layers._band_matmul_sum, layers._shifted_sum):
    np.testing.assert_allclose(np.asarray(window_sum(jnp.asarray(x), n)), want, rtol=1e-6, atol=1e-6)

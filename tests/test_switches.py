"""The original code's and Caffe's switches, each against an independent computation
(PyTorch, NumPy loops), the two configs' field sets against the README's table, and both
configs end to end on a tiny generated folder."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import model, optim, parallel
from alexnet_jax.analysis import report
from configs import caffe_bvlc, original_code, paper
from tests import tolerance
from tests.paper_rule import numpy_paper_rule, random_grads, run_optax, small_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(seed, n=2, size=224):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3)) * 60.0


def _params(cfg, seed):
  # Larger weights than the init so that normalisations see large activities.
  return jax.tree.map(lambda p: p * 8.0, alexnet_jax.init_params(jax.random.key(seed), cfg))


def _torch_lrn(x_nhwc, n, alpha, beta, k):
  """torch.nn.functional.local_response_norm: b = a / (k + alpha / n * sum a^2)^beta."""
  torch = pytest.importorskip('torch')
  x = torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc).transpose(0, 3, 1, 2)))
  out = torch.nn.functional.local_response_norm(x, n, alpha=alpha, beta=beta, k=k)
  return out.numpy().transpose(0, 2, 3, 1)


def _numpy_lrn(a, n, scale, beta, k):
  """Sec. 3.3 with explicit loops: b_i = a_i / (k + scale * sum_{|j - i| <= n/2} a_j^2)^beta."""
  a = np.asarray(a, np.float64)
  out = np.empty_like(a)
  channels = a.shape[-1]
  for i in range(channels):
    lo, hi = max(0, i - n // 2), min(channels, i + n // 2 + 1)
    out[..., i] = a[..., i] / (k + scale * np.sum(a[..., lo:hi] ** 2, axis=-1)) ** beta
  return out


# ------------------------------------------------------------------------------ LRN


def test_lrn_alpha_over_n_and_k_1_are_torchs_local_response_norm(small_model_config):
  # Caffe's and PyTorch's LRN divide alpha by n; so does the original code's cmrnorm.
  cfg = small_model_config(lrn_alpha_over_n=True, lrn_k=1.0)
  assert model.Spec.from_config(cfg).lrn_scale == pytest.approx(2e-5)
  assert model.Spec.from_config(small_model_config()).lrn_scale == pytest.approx(1e-4)
  params = _params(cfg, 1)
  images = _images(2)
  relu1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv1'))
  lrn1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='lrn1'))
  half = relu1.shape[-1] // 2
  for col in (slice(0, half), slice(half, None)):  # Within each column.
    ref = _torch_lrn(relu1[..., col], 5, alpha=1e-4, beta=0.75, k=1.0)
    np.testing.assert_allclose(lrn1[..., col], ref, rtol=2e-5, atol=1e-5)
  # The switch matters: the paper's alpha on the same activities gives another output.
  paper_lrn = np.asarray(alexnet_jax.apply(params, images, small_model_config(lrn_k=1.0), layer='lrn1'))
  assert np.abs(paper_lrn - lrn1).max() > 1e-2 * np.abs(lrn1).max()


def test_lrn_across_columns_spans_both_columns_channels(small_model_config):
  # Caffe's LRN layer normalises over all channels of its input, across the groups.
  cfg = small_model_config(lrn_across_columns=True, lrn_alpha_over_n=True, lrn_k=1.0)
  within = small_model_config(lrn_alpha_over_n=True, lrn_k=1.0)
  params = _params(cfg, 3)
  images = _images(4)
  relu1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv1'))
  lrn1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='lrn1'))
  np.testing.assert_allclose(lrn1, _torch_lrn(relu1, 5, 1e-4, 0.75, 1.0), rtol=2e-5, atol=1e-5)
  # Only the two channels either side of the column boundary see the other column.
  own = np.asarray(alexnet_jax.apply(params, images, within, layer='lrn1'))
  half = relu1.shape[-1] // 2
  differs = np.abs(own - lrn1).max(axis=(0, 1, 2)) > 1e-6 * np.abs(lrn1).max()
  assert list(np.flatnonzero(differs)) == [half - 2, half - 1, half, half + 1]
  # One column per device ('model' = 2) computes the same as one device.
  for shape in ((1, 2), (2, 2)):
    mesh = parallel.make_mesh(*shape, devices=jax.devices()[:shape[0] * shape[1]])
    for layer in ('lrn1', None):
      ours = parallel.apply(params, images, cfg, mesh, layer=layer)
      ref = alexnet_jax.apply(params, images, cfg, layer=layer)
      np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=0,
                                 atol=tolerance.atol(tolerance.longest_sum(params), ref),
                                 err_msg=str(shape))


def test_lrn1_before_relu_is_the_original_order(small_model_config):
  cfg = small_model_config(lrn1_before_relu=True)
  params = _params(cfg, 5)
  images = _images(6)
  conv1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv1'))
  lrn1 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='lrn1'))
  # 'conv1' is now before its ReLU: the plain convolution, negative values included.
  torch = pytest.importorskip('torch')
  kernel = np.concatenate([params['conv1']['kernel'][0], params['conv1']['kernel'][1]], -1)
  bias = np.concatenate([params['conv1']['bias'][0], params['conv1']['bias'][1]])
  x = torch.from_numpy(np.array(images).transpose(0, 3, 1, 2))
  x = torch.nn.functional.pad(x, (0, 3, 0, 3))
  ref = torch.nn.functional.conv2d(x, torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1)),
                                   torch.from_numpy(np.asarray(bias)), stride=4)
  ref = ref.numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(conv1, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  assert (conv1 < 0).mean() > 0.2
  # conv1 -> LRN (the paper's formula, each column) -> ReLU.
  half = conv1.shape[-1] // 2
  expected = np.concatenate([_numpy_lrn(conv1[..., :half], 5, 1e-4, 0.75, 2.0),
                             _numpy_lrn(conv1[..., half:], 5, 1e-4, 0.75, 2.0)], -1)
  np.testing.assert_allclose(lrn1, np.maximum(expected, 0), rtol=1e-4, atol=1e-4)
  # Not the paper's order: normalising the rectified maps gives something else.
  paper_order = np.asarray(alexnet_jax.apply(params, images, small_model_config(), layer='lrn1'))
  assert np.abs(paper_order - lrn1).max() > 1e-2 * np.abs(lrn1).max()


# -------------------------------------------------------------------------- cnorm2


def numpy_cnorm(a, size, scale, power):
  """cuda-convnet's ContrastNormLayer, transcribed loop by loop from its CUDA kernels:
  meanDiffs = a - AvgPooler(size^2)(a) over the window starting at -size/2 (clipped to the
  image), then denom = 1 + scale / size^2 * sum over the same clipped window of
  meanDiffs^2, and out = a * denom^-power. a: [N, H, W, C]."""
  a = np.asarray(a, np.float64)
  n, height, width, _ = a.shape
  start = -(size // 2)

  def window(y, x):
    y0, x0 = max(0, y + start), max(0, x + start)
    return slice(y0, min(height, y + start + size)), slice(x0, min(width, x + start + size))

  diffs = np.empty_like(a)
  for y in range(height):
    for x in range(width):
      ys, xs = window(y, x)
      diffs[:, y, x] = a[:, y, x] - a[:, ys, xs].sum(axis=(1, 2)) / size ** 2
  out = np.empty_like(a)
  for y in range(height):
    for x in range(width):
      ys, xs = window(y, x)
      denom = 1.0 + scale / size ** 2 * (diffs[:, ys, xs] ** 2).sum(axis=(1, 2))
      out[:, y, x] = a[:, y, x] * denom ** -power
  del n
  return out


@pytest.mark.parametrize('size', [5, 4, 3])
def test_contrast_norm_matches_cuda_convnets_kernel(size):
  a = np.random.default_rng(size).normal(0, 30, size=(2, 9, 11, 3)).astype(np.float32)
  ours = model.contrast_norm(jnp.asarray(a), size=size, alpha=1e-3, beta=0.75)
  np.testing.assert_allclose(np.asarray(ours), numpy_cnorm(a, size, 1e-3, 0.75), rtol=1e-5, atol=1e-5)


def test_cnorm2_follows_conv2_in_the_network(small_model_config):
  cfg = small_model_config(cnorm2=True, cnorm2_alpha=0.01)
  params = _params(cfg, 7)
  images = _images(8)
  conv2 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='conv2'))
  cnorm2 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='cnorm2'))
  ref = numpy_cnorm(conv2, 5, 0.01, 0.75)
  np.testing.assert_allclose(cnorm2, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  assert np.abs(ref - conv2).max() > 1e-2 * np.abs(conv2).max()  # It does something.
  # LRN2 reads cnorm2's output (the paper's LRN on the normalised maps, per column).
  lrn2 = np.asarray(alexnet_jax.apply(params, images, cfg, layer='lrn2'))
  half = cnorm2.shape[-1] // 2
  expected = np.concatenate([_numpy_lrn(cnorm2[..., :half], 5, 1e-4, 0.75, 2.0),
                             _numpy_lrn(cnorm2[..., half:], 5, 1e-4, 0.75, 2.0)], -1)
  np.testing.assert_allclose(lrn2, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # Gradients flow through it.
  grads = jax.grad(lambda p: jnp.sum(alexnet_jax.apply(p, images, cfg) ** 2))(params)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match='cnorm2'):
    alexnet_jax.apply(params, images, small_model_config(), layer='cnorm2')


# ------------------------------------------------------------------------ init, optimizer


def test_init_std_conv345():
  cfg = alexnet_jax.model_config()
  cfg.init_std_conv345 = 0.03
  params = alexnet_jax.init_params(jax.random.key(9), cfg)
  for name in model.LAYERS:
    expected = 0.03 if name in ('conv3', 'conv4', 'conv5') else 0.01
    std = float(np.asarray(params[name]['kernel']).std())
    assert abs(std - expected) < 0.05 * expected, name
  bias = {n: float(np.asarray(params[n]['bias']).mean()) for n in model.LAYERS}
  assert bias == {'conv1': 0, 'conv2': 1, 'conv3': 0, 'conv4': 1, 'conv5': 1, 'fc6': 1, 'fc7': 1,
                  'fc8': 0}


@pytest.mark.parametrize('get_config', [original_code.get_config, caffe_bvlc.get_config])
def test_bias_rate_and_decay_of_the_original_and_caffe(get_config):
  # Biases at twice the rate and without weight decay, against the NumPy rule.
  config = get_config()
  params, grads = small_params(), random_grads(small_params(), 4)
  tx = optim.make_optimizer(optim.OptimSpec.from_config(config.optim), steps_per_epoch=1000).tx
  ours, _, _ = run_optax(tx, params, grads)
  ref, _ = numpy_paper_rule(params, grads, [0.01] * 4, weight_decay=5e-4, decay_biases=False,
                            bias_mult=2.0)
  for layer in params:
    for name in params[layer]:
      np.testing.assert_allclose(np.asarray(ours[layer][name]), ref[layer][name], rtol=1e-5,
                                 atol=1e-6)


# ------------------------------------------------------------------ configs and README


def _readme_switches():
  """{field: (paper, original code, Caffe)} from the README's table of switches."""
  with open(os.path.join(REPO, 'README.md')) as f:
    text = f.read()
  section = text.split('### Switches', 1)[1].split('\n#', 1)[0]
  rows = {}
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    match = re.fullmatch(r'`([\w.]+)`', cells[0]) if len(cells) >= 4 else None
    if match:
      rows[match.group(1)] = tuple(cells[1:4])
  return rows


@pytest.mark.parametrize('name,get_config,column', [('original code', original_code.get_config, 1),
                                                    ('Caffe', caffe_bvlc.get_config, 2)])
def test_readme_table_lists_every_field_each_config_sets(name, get_config, column):
  reference = report.paper_config()
  config = report.json.loads(get_config().to_json())
  changed = report.differences(config, reference)
  rows = _readme_switches()
  # A cell starting with '-' keeps the paper config's value; any other names the config's.
  for field, (value, _) in changed.items():
    assert field in rows, f'{field} ({name}) is not in README "Switches"'
    assert not rows[field][column].startswith('-'), (
        f'README says {name} keeps {field}, its config sets {value!r}')
    shown = str(tuple(value) if isinstance(value, list) else value).replace(' ', '').lower()
    assert shown in rows[field][column].replace(' ', '').lower(), (field, value)
  for field, cells in rows.items():
    if not cells[column].startswith('-'):
      assert field in changed, f'README: {name} sets {field}, its config does not'


@pytest.mark.parametrize('get_config', [original_code.get_config, caffe_bvlc.get_config])
def test_config_smoke_end_to_end(get_config, tmp_path, write_dark_and_bright, train_config):
  folder = write_dark_and_bright(tmp_path / 'images', {'train': 8, 'val': 3})
  config = get_config()
  config.data.source = 'folder'
  config.data.folder = folder
  config.data.data_dir = str(tmp_path / 'data_dir')
  config.data.shuffle_buffer = 16
  config.model.num_classes = 2
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (32, 32)
  config.batch_size = 4
  config.eval_batch_size = 2
  config.max_steps = 2
  config.log_every_steps = 1
  config.mesh.data, config.mesh.model = 1, 2  # One column per device: the gathers run.
  summary = train_config(config, str(tmp_path / 'run'))
  assert summary['step'] == 2
  assert np.isfinite(summary['first_loss']) and np.isfinite(summary['last_loss'])
  for views in ('center', 'ten'):
    assert summary['eval'][views]['examples'] == 6
  params = alexnet_jax.load_params(str(tmp_path / 'run'))
  assert alexnet_jax.param_shapes(config.model) == {
      n: {k: v.shape for k, v in layer.items()} for n, layer in params.items()}


def test_original_code_config_is_the_paper_config_plus_its_switches():
  changed = report.differences(report.json.loads(original_code.get_config().to_json()),
                               report.paper_config())
  assert set(changed) == {'model.lrn_alpha_over_n', 'model.lrn1_before_relu', 'model.cnorm2',
                          'model.init_std_conv345', 'optim.bias_lr_multiplier',
                          'data.lighting', 'data.mean_patch'}
  assert paper.get_config().model.lrn_k == original_code.get_config().model.lrn_k == 2.0

"""The paper's two-column AlexNet (Sec. 3, Fig. 2) as pure functions over a params pytree.

The network is written once, per column. `apply` runs it with every column on the
current device; `alexnet_jax.parallel` runs the same code with the columns on the
devices of a ('data', 'model') mesh. The two differ only in the `Placement` they pass:
how the columns' activations are gathered where a layer reads both columns (before
conv3, fc6, fc7 and fc8), and which columns and examples this device holds (so that
dropout masks do not depend on the layout).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Params = dict[str, dict[str, jax.Array]]

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7', 'fc8')
LAYERS = CONV_LAYERS + FC_LAYERS
# Activations `apply(..., layer=...)` can return, in network order.
ACTIVATIONS = ('conv1', 'lrn1', 'pool1', 'conv2', 'lrn2', 'pool2', 'conv3', 'conv4',
               'conv5', 'pool5', 'fc6', 'fc7', 'fc8')


def model_config() -> ml_collections.ConfigDict:
  """The paper's network; each field can be switched for an ablation (SPEC.md)."""
  cfg = ml_collections.ConfigDict()
  cfg.num_classes = 1000  # Sec. 2: ILSVRC's 1000 classes.
  cfg.columns = 2  # Sec. 3.2: two columns ("GPUs"); 1 = the one-column ablation.
  # Sec. 3.5: 224x224x3 input. 227 is Caffe's choice (no padding needed for 55x55).
  cfg.image_size = 224
  # Sec. 3.5 / Fig. 2: kernels of the whole layer (both columns together).
  cfg.conv_features = (96, 256, 384, 384, 256)
  cfg.fc_features = (4096, 4096)  # fc6, fc7 (fc8 has num_classes).
  cfg.activation = 'relu'  # Sec. 3.1: ReLU; 'tanh' for Fig. 1's comparison.
  # Sec. 7: "removing any of the middle convolutional layers results in a loss of about
  # 2% for the top-1 performance". '' keeps all; 'conv3', 'conv4' or 'conv5' removes one
  # (the next layer then reads what the removed one read).
  cfg.remove_conv = ''
  # Sec. 3.3 local response normalisation, within a column's channels.
  cfg.lrn = True
  cfg.lrn_k = 2.0
  cfg.lrn_n = 5
  cfg.lrn_alpha = 1e-4
  cfg.lrn_beta = 0.75
  # Sec. 3.4 overlapping pooling: z = 3, s = 2 (z = 2 is the non-overlapping ablation).
  cfg.pool_window = 3
  cfg.pool_stride = 2
  # Sec. 4.2 dropout on fc6 and fc7 outputs. 'paper': no rescale while training, outputs
  # times (1 - rate) at test; 'inverted': divide by (1 - rate) while training.
  cfg.dropout_rate = 0.5
  cfg.dropout_form = 'paper'
  # Sec. 5 init: 'paper' = N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7;
  # 'caffe' = bvlc_alexnet's fallback (fc6/fc7 std 0.005, those biases 0.1);
  # 'he' = variance-preserving (not the paper's): learns from the first steps, for short
  # demo runs where N(0, 0.01) would sit on the flat start for epochs.
  cfg.init = 'paper'
  cfg.init_std = 0.01
  # Compute dtype of activations and matmuls ('float32' or 'bfloat16'); params stay float32.
  cfg.dtype = 'float32'
  return cfg


@dataclasses.dataclass(frozen=True)
class Spec:
  """A hashable, validated view of the model config (a static argument to jit)."""
  num_classes: int
  columns: int
  image_size: int
  conv_widths: tuple[int, ...]  # Kernels per column, conv1..conv5.
  fc_widths: tuple[int, ...]  # Neurons per column, fc6, fc7.
  activation: str
  lrn: bool
  lrn_k: float
  lrn_n: int
  lrn_alpha: float
  lrn_beta: float
  pool_window: int
  pool_stride: int
  dropout_rate: float
  dropout_form: str
  init: str
  init_std: float
  dtype: str
  remove_conv: str = ''

  @property
  def layers(self) -> tuple[str, ...]:
    """The learned layers of this network, in order."""
    return tuple(name for name in LAYERS if name != self.remove_conv)

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> 'Spec':
    if isinstance(cfg, Spec):
      return cfg
    if cfg.columns not in (1, 2):
      raise ValueError(f'model.columns must be 1 or 2, got {cfg.columns}.')
    if cfg.image_size not in (224, 227):
      raise ValueError(f'model.image_size must be 224 (padded conv1) or 227, got {cfg.image_size}.')
    if cfg.activation not in ('relu', 'tanh'):
      raise ValueError(f"model.activation must be 'relu' or 'tanh', got {cfg.activation!r}.")
    if cfg.dropout_form not in ('paper', 'inverted'):
      raise ValueError(f"model.dropout_form must be 'paper' or 'inverted', got {cfg.dropout_form!r}.")
    if not 0.0 <= cfg.dropout_rate < 1.0:
      raise ValueError(f'model.dropout_rate must be in [0, 1), got {cfg.dropout_rate}.')
    if cfg.init not in ('paper', 'caffe', 'he'):
      raise ValueError(f"model.init must be 'paper', 'caffe' or 'he', got {cfg.init!r}.")
    if cfg.get('remove_conv', '') not in ('', 'conv3', 'conv4', 'conv5'):
      raise ValueError("model.remove_conv must be '', 'conv3', 'conv4' or 'conv5', got "
                       f'{cfg.remove_conv!r}.')
    if cfg.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {cfg.dtype!r}.")
    if cfg.pool_window < 1 or cfg.pool_stride < 1:
      raise ValueError('model.pool_window and model.pool_stride must be positive.')
    if cfg.lrn_n < 1 or cfg.lrn_n % 2 == 0:
      raise ValueError(f'model.lrn_n must be odd and positive, got {cfg.lrn_n}.')
    conv = tuple(int(f) for f in cfg.conv_features)
    fc = tuple(int(f) for f in cfg.fc_features)
    if len(conv) != 5 or len(fc) != 2:
      raise ValueError('model.conv_features needs 5 entries and model.fc_features 2.')
    if cfg.columns == 2:
      if any(f % 2 for f in conv + fc):
        raise ValueError('With two columns every layer width must be even (half per column).')
      conv_widths = tuple(f // 2 for f in conv)
      fc_widths = tuple(f // 2 for f in fc)
    else:
      # SPEC.md Sec. 3: the one-column net has half the kernels in conv1-conv4 but the
      # full conv5 and fully-connected layers, so that parameter counts stay close.
      conv_widths = tuple(f // 2 for f in conv[:4]) + (conv[4],)
      fc_widths = fc
    return cls(
        num_classes=int(cfg.num_classes), columns=int(cfg.columns),
        image_size=int(cfg.image_size), conv_widths=conv_widths, fc_widths=fc_widths,
        activation=cfg.activation, lrn=bool(cfg.lrn), lrn_k=float(cfg.lrn_k),
        lrn_n=int(cfg.lrn_n), lrn_alpha=float(cfg.lrn_alpha), lrn_beta=float(cfg.lrn_beta),
        pool_window=int(cfg.pool_window), pool_stride=int(cfg.pool_stride),
        dropout_rate=float(cfg.dropout_rate), dropout_form=cfg.dropout_form,
        init=cfg.init, init_std=float(cfg.init_std), dtype=cfg.dtype,
        remove_conv=cfg.get('remove_conv', ''))


# ---------------------------------------------------------------------------------------
# Parameters


def conv1_padding(image_size: int) -> tuple[int, int]:
  """Zero padding (before, after) that makes conv1's output 55x55 (SPEC.md Sec. 3).

  The original code computes 1 + ceil((224 - 11) / 4) = 55 output positions, which is
  zero padding of 0 before and 3 after; a 227 input needs none.
  """
  return (0, (55 - 1) * 4 + 11 - image_size)


def param_shapes(cfg) -> dict[str, dict[str, tuple[int, ...]]]:
  """The documented parameter layout: a leading column axis on column layers.

  Where a layer reads both columns (conv3, fc6, fc7, fc8) its input axis holds column
  0's channels first, then column 1's.
  """
  s = Spec.from_config(cfg)
  c = s.columns
  w1, w2, w3, w4, w5 = s.conv_widths
  f6, f7 = s.fc_widths
  kernels = {'conv1': (c, 11, 11, 3, w1), 'conv2': (c, 5, 5, w1, w2)}
  reads = c * w2  # The first of conv3-conv5 reads both columns' pool2 maps.
  for name, width in (('conv3', w3), ('conv4', w4), ('conv5', w5)):
    if name != s.remove_conv:
      kernels[name] = (c, 3, 3, reads, width)
      reads = width  # The next reads only its own column.
  kernels.update({
      'fc6': (c, 6 * 6 * c * reads, f6),  # Reads both columns' 6x6 pool5 maps, flattened (H, W, C).
      'fc7': (c, c * f6, f7),  # Reads both columns.
      'fc8': (c * f7, s.num_classes),  # One layer reading both halves of fc7 (original code).
  })
  return {name: {'kernel': k, 'bias': k[:1] + k[-1:] if name != 'fc8' else k[-1:]}
          for name, k in kernels.items()}


def count_params(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def init_params(rng: jax.Array, cfg) -> Params:
  """Sec. 5 initialisation: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7.

  "This initialization accelerates the early stages of learning by providing the ReLUs
  with positive inputs." The 'caffe' scheme is bvlc_alexnet's fallback for runs where
  biases of 1 leave the loss flat: std 0.005 in fc6/fc7 and those biases 0.1.
  """
  s = Spec.from_config(cfg)
  one_biases = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')
  params = {}
  for i, (name, shapes) in enumerate(param_shapes(s).items()):
    std = s.init_std
    bias = 1.0 if name in one_biases else 0.0
    if s.init == 'caffe' and name in one_biases:
      bias = 0.1
      std = 0.005 if name in ('fc6', 'fc7') else std
    elif s.init == 'he':
      # Variance-preserving through ReLUs (std sqrt(2 / fan_in); fc8 sqrt(1 / fan_in)),
      # so a short run learns from its first steps. It assumes unit-scale inputs
      # (config.data.input_scale = 1/60): with raw 0-255 values conv1's gradients are
      # ~60x its weights' scale and the first steps diverge.
      fan_in = int(np.prod(shapes['kernel'][-4:-1] if name.startswith('conv') else shapes['kernel'][-2]))
      std = float(np.sqrt((1.0 if name == 'fc8' else 2.0) / fan_in))
      bias = 0.0
    key = jax.random.fold_in(rng, i)
    params[name] = {
        'kernel': std * jax.random.normal(key, shapes['kernel'], jnp.float32),
        'bias': jnp.full(shapes['bias'], bias, jnp.float32),
    }
  return params


# ---------------------------------------------------------------------------------------
# Layers


def local_response_norm(a: jax.Array, *, k: float, n: int, alpha: float, beta: float) -> jax.Array:
  """Sec. 3.3: b_i = a_i / (k + alpha * sum_{|j - i| <= n/2} a_j^2)^beta over channels.

  The sum is not divided by n (Caffe and PyTorch divide alpha by n). The window sum is a
  product with a banded 0/1 matrix: one matmul, fast on every backend, where a
  reduce_window over channels is slow on XLA:CPU. It runs in float32 (the power is
  sensitive to rounding in bfloat16).
  """
  return _lrn(a.astype(jnp.float32), k, n, alpha, beta).astype(a.dtype)


def _window_sum(x: jax.Array, n: int) -> jax.Array:
  """sum_{|j - i| <= n/2} x_j over the last axis (zero beyond the edges)."""
  channels = x.shape[-1]
  idx = np.arange(channels)
  band = (np.abs(idx[:, None] - idx[None, :]) <= n // 2).astype(np.float32)
  return jnp.dot(x, band, precision=jax.lax.Precision.HIGHEST)


# The analytic gradient costs about half of what autodiff of the power gives on XLA:CPU.
# With s_i = k + alpha * sum_{j in N(i)} a_j^2 (N symmetric, so one window sum serves):
#   dL/da_j = g_j s_j^-beta - 2 alpha beta a_j sum_{i in N(j)} g_i a_i s_i^(-beta - 1).
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(a, k, n, alpha, beta):
  return _lrn_fwd(a, k, n, alpha, beta)[0]


def _lrn_fwd(a, k, n, alpha, beta):
  s = k + alpha * _window_sum(a * a, n)
  scale = jnp.power(s, -beta)
  return a * scale, (a, s, scale)


def _lrn_bwd(k, n, alpha, beta, residuals, g):
  del k
  a, s, scale = residuals
  inner = _window_sum(g * a * scale / s, n)
  return (g * scale - (2.0 * alpha * beta) * a * inner,)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Sec. 3.4: overlapping pooling (z = 3 > s = 2) with the default config."""
  return _max_pool(x, window, stride)


# reduce_window's gradient (select_and_scatter) runs 3x slower on XLA:CPU than this one:
# per window offset, a strided slice compared with the output, its share of the incoming
# gradient padded back to the input's shape. The gradient goes to the first maximum of
# each window in row-major order, as select_and_scatter's does.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, stride):
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max,
                               (1, window, window, 1), (1, stride, stride, 1), 'VALID')


def _max_pool_fwd(x, window, stride):
  y = _max_pool(x, window, stride)
  return y, (x, y)


def _max_pool_bwd(window, stride, residuals, g):
  x, y = residuals
  n, height, width, channels = x.shape
  out_h, out_w = y.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  taken = dx = None
  for i in range(window):
    for j in range(window):
      end_h, end_w = i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1
      at = jax.lax.slice(x, (0, i, j, 0), (n, end_h, end_w, channels), (1, stride, stride, 1))
      hit = at == y
      if taken is not None:
        hit = hit & ~taken
      taken = hit if taken is None else taken | hit
      share = jax.lax.pad(jnp.where(hit, g, zero), zero,
                          ((0, 0, 0), (i, height - end_h, stride - 1),
                           (j, width - end_w, stride - 1), (0, 0, 0)))
      dx = share if dx is None else dx + share
  return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, stride: int = 1,
         padding=((0, 0), (0, 0))) -> jax.Array:
  # One ungrouped convolution per column: XLA:CPU runs grouped convolutions (and what
  # vmap over the column axis lowers to) 6-12x slower than the same work ungrouped.
  y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (stride, stride), padding,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + bias.astype(x.dtype)


def _same(pad: int):
  return ((pad, pad), (pad, pad))


# ---------------------------------------------------------------------------------------
# The network


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where this computation's columns and examples sit in the whole network and batch.

  gather: takes this device's columns' activations (concatenated on the last axis) to
    all columns' (column 0 first): the only communication between columns.
  first_column / first_example: global indices of this device's first column and
    example, so that dropout masks are drawn per (column, example) whatever the layout.
  """
  gather: Callable[[jax.Array], jax.Array] = lambda x: x
  first_column: Any = 0
  first_example: Any = 0


def _dropout(x, rng, spec: Spec, layer_index: int, column, placement: Placement, train: bool):
  """Sec. 4.2: each hidden neuron's output set to zero with probability `dropout_rate`.

  'paper' form: no rescale while training and outputs multiplied by (1 - rate) at test;
  'inverted': divide by (1 - rate) while training, identity at test. The mask for
  example e, column c is drawn from fold_in(rng, layer, c, e): independent of how the
  batch and the columns are split across devices.
  """
  keep = 1.0 - spec.dropout_rate
  if not train:
    return x * keep if spec.dropout_form == 'paper' else x
  if spec.dropout_rate == 0.0:
    return x
  key = jax.random.fold_in(jax.random.fold_in(rng, layer_index), column)
  examples = placement.first_example + jnp.arange(x.shape[0])
  mask = jax.vmap(lambda e: jax.random.bernoulli(jax.random.fold_in(key, e), keep, x.shape[1:]))(examples)
  x = jnp.where(mask, x, jnp.zeros_like(x))
  return x / keep if spec.dropout_form == 'inverted' else x


def forward(params: Params, images: jax.Array, spec: Spec, *, train: bool = False,
            rng: jax.Array | None = None, layer: str | None = None,
            placement: Placement = Placement()) -> jax.Array:
  """The network on the columns present in `params` (all of them, or one per device).

  No validation and no jit: `apply` is the checked entry point, and
  `alexnet_jax.parallel` calls this inside `jax.shard_map`.
  """
  dtype = jnp.dtype(spec.dtype)
  act = jax.nn.relu if spec.activation == 'relu' else jnp.tanh
  local_columns = params['conv1']['kernel'].shape[0]
  columns = range(local_columns)

  def lrn(x):
    if not spec.lrn:
      return x
    return local_response_norm(x, k=spec.lrn_k, n=spec.lrn_n, alpha=spec.lrn_alpha, beta=spec.lrn_beta)

  def pool(x):
    return max_pool(x, spec.pool_window, spec.pool_stride)

  def col(name, c):
    return params[name]['kernel'][c], params[name]['bias'][c]

  def both(xs):  # Every column's activations, column 0 first.
    return placement.gather(jnp.concatenate(xs, axis=-1))

  found = {}

  def reached(name, xs):
    if layer == name:
      found[name] = both(xs)
    return layer == name

  x = images.astype(dtype)
  pad1 = conv1_padding(spec.image_size)
  # conv1 and conv2 (Fig. 2): each column reads the image, then only its own maps.
  h = [act(conv(x, *col('conv1', c), stride=4, padding=(pad1, pad1))) for c in columns]
  if reached('conv1', h): return found['conv1']
  h = [lrn(y) for y in h]
  if reached('lrn1', h): return found['lrn1']
  h = [pool(y) for y in h]
  if reached('pool1', h): return found['pool1']
  h = [act(conv(y, *col('conv2', c), padding=_same(2))) for c, y in zip(columns, h)]
  if reached('conv2', h): return found['conv2']
  h = [lrn(y) for y in h]
  if reached('lrn2', h): return found['lrn2']
  h = [pool(y) for y in h]
  if reached('pool2', h): return found['pool2']
  # conv3 reads both columns; conv4 and conv5 only their own.
  x = both(h)
  h = None
  for name in ('conv3', 'conv4', 'conv5'):
    if name == spec.remove_conv:
      continue
    inputs = [x] * local_columns if h is None else h
    h = [act(conv(y, *col(name, c), padding=_same(1))) for c, y in zip(columns, inputs)]
    if reached(name, h): return found[name]
  h = [pool(y) for y in h]
  if reached('pool5', h): return found['pool5']
  # fc6 and fc7 read both columns. Flattening (H, W, C) after the gather puts column 0's
  # channels first at every position, as the documented fc6 layout says.
  x = both(h)
  x = x.reshape(x.shape[0], -1)
  for layer_index, name in ((6, 'fc6'), (7, 'fc7')):
    h = []
    for c in columns:
      kernel, bias = col(name, c)
      y = act(jnp.dot(x, kernel.astype(dtype)) + bias.astype(dtype))
      h.append(_dropout(y, rng, spec, layer_index, placement.first_column + c, placement, train))
    if reached(name, h): return found[name]
    x = both(h)
  logits = jnp.dot(x, params['fc8']['kernel'].astype(dtype)) + params['fc8']['bias'].astype(dtype)
  return logits.astype(jnp.float32)


# ---------------------------------------------------------------------------------------
# The checked entry point


def validate_images(images, spec: Spec) -> None:
  shape = getattr(images, 'shape', None)
  if shape is None or len(shape) != 4:
    raise ValueError(f'images must be a [N, {spec.image_size}, {spec.image_size}, 3] array, '
                     f'got shape {shape}.')
  if tuple(shape[1:3]) != (spec.image_size, spec.image_size):
    raise ValueError(f'images must be {spec.image_size}x{spec.image_size} (model.image_size), '
                     f'got {shape[1]}x{shape[2]}.')
  if shape[3] != 3:
    raise ValueError(f'images must have 3 (RGB) channels, got {shape[3]}.')
  if shape[0] == 0:  # Flattening before fc6, reshape(0, -1), cannot infer its second size.
    raise ValueError('images is an empty batch (0 images): pass at least one image.')
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f'images must be floating point (mean-subtracted RGB), got {images.dtype}.')


def validate_params(params, spec: Spec) -> None:
  """Checks the tree against the documented layout, naming the first mismatch."""
  expected = param_shapes(spec)
  if not isinstance(params, dict) or set(params) != set(expected):
    got = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(f'params must be a dict with layers {list(expected)}, got {got}.')
  for name, leaves in expected.items():
    if not isinstance(params[name], dict) or set(params[name]) != {'kernel', 'bias'}:
      raise ValueError(f"params['{name}'] must be a dict with 'kernel' and 'bias'.")
    for leaf, shape in leaves.items():
      got = tuple(getattr(params[name][leaf], 'shape', ()))
      if got != shape:
        raise ValueError(f"params['{name}']['{leaf}'] has shape {got}, expected {shape} for "
                         f'this model config (columns={spec.columns}, '
                         f'num_classes={spec.num_classes}).')


def check_layer(layer: str | None, spec: Spec) -> None:
  if layer is not None and layer not in ACTIVATIONS:
    raise ValueError(f'layer must be one of {ACTIVATIONS} or None, got {layer!r}.')
  if layer is not None and layer == spec.remove_conv:
    raise ValueError(f'layer {layer!r} is removed in this config (model.remove_conv).')


@functools.partial(jax.jit, static_argnames=('spec', 'train', 'layer'))
def _apply(params, images, rng, spec, train, layer):
  return forward(params, images, spec, train=train, rng=rng, layer=layer)


def apply(params: Params, images: jax.Array, cfg, *, train: bool = False,
          rng: jax.Array | None = None, layer: str | None = None) -> jax.Array:
  """Logits [N, num_classes] of mean-subtracted images [N, 224, 224, 3], on one device.

  train=True applies dropout with `rng` (a jax.random.key). layer='fc7' (or any name in
  ACTIVATIONS) returns that layer's activations instead, both columns concatenated with
  column 0's channels first: after the ReLU for conv and fc layers, and after dropout
  (or its test-time scaling) for fc6 and fc7.
  """
  spec = Spec.from_config(cfg)
  validate_images(images, spec)
  validate_params(params, spec)
  check_layer(layer, spec)
  if train and rng is None:
    raise ValueError('apply(train=True) needs rng=jax.random.key(...) for dropout.')
  if rng is None:
    rng = jax.random.key(0)  # Unused outside training.
  return _apply(params, images, rng, spec, train, layer)

"""The paper's two-column AlexNet (Sec. 3, Fig. 2) as Flax linen modules over a plain params pytree.

`AlexNet(config)` is a `flax.linen` Module: `init` makes the documented params pytree and
`apply({'params': params}, images, train=..., layer=..., rngs={'dropout': key})` is a pure
function. `init_params` and `apply` are thin functional wrappers over it. The network is
written once, per column: `apply` runs it with every column on the current device, and
`alexnet_jax.parallel` runs the same module with one or two columns per device of a
('data', 'model') mesh. The two differ only in the `Placement` passed to the module: how
the columns' activations are exchanged where a layer reads both columns (gathered
before conv3, fc6 and fc7; fc8's partial logits summed), and which columns and examples
this device holds (so that dropout
masks do not depend on the layout).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Params = dict[str, dict[str, jax.Array]]

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7', 'fc8')
LAYERS = CONV_LAYERS + FC_LAYERS
# Activations `apply(..., layer=...)` can return, in network order.
# 'cnorm2' exists only with model.cnorm2 (the original code's extra normalisation).
ACTIVATIONS = ('conv1', 'lrn1', 'pool1', 'conv2', 'cnorm2', 'lrn2', 'pool2', 'conv3', 'conv4',
               'conv5', 'pool5', 'fc6', 'fc7', 'fc8')
# The Flax collection where `AlexNet` records every layer's activations when it is mutable.
ACTIVATIONS_COLLECTION = 'activations'


def _choice(name: str, value, allowed, shown: str | None = None) -> None:
  if value not in allowed:
    names = [repr(a) if isinstance(a, str) else str(a) for a in allowed]
    shown = shown or ', '.join(names[:-1]) + ' or ' + names[-1]
    raise ValueError(f'model.{name} must be {shown}, got {value!r}.')


@dataclasses.dataclass(frozen=True)
class Spec:
  """The model's fields, declared once: `model_config()` is this dataclass's defaults as a
  ConfigDict, and a Spec is the validated, hashable view of such a config that `jit` takes
  as a static argument and `AlexNet` reads. The defaults are the paper's (section beside each)."""
  num_classes: int = 1000  # Sec. 2: ILSVRC's 1000 classes.
  columns: int = 2  # Sec. 3.2: two columns ("GPUs"); 1 = the one-column ablation.
  # Sec. 3.5: 224x224x3 input. 227 is Caffe's choice (no padding needed for 55x55).
  image_size: int = 224
  # Sec. 3.5 / Fig. 2: kernels of the whole layer (both columns together).
  conv_features: tuple[int, ...] = (96, 256, 384, 384, 256)
  fc_features: tuple[int, ...] = (4096, 4096)  # fc6, fc7 (fc8 has num_classes).
  activation: str = 'relu'  # Sec. 3.1: ReLU; 'tanh' for Fig. 1's comparison.
  # Sec. 7: "removing any of the middle convolutional layers results in a loss of about
  # 2% for the top-1 performance". '' keeps all; 'conv3', 'conv4' or 'conv5' removes one
  # (the next layer then reads what the removed one read).
  remove_conv: str = ''
  # Sec. 3.3 local response normalisation, within a column's channels.
  lrn: bool = True
  lrn_k: float = 2.0  # Sec. 3.3: k = 2 (Caffe's bvlc_alexnet: 1).
  lrn_n: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  # Sec. 3.3 multiplies the sum of squares by alpha. The original code (cuda-convnet's
  # cmrnorm divides its `scale` by the size) and Caffe divide alpha by n: True gives
  # alpha / n, 2e-5 with alpha = 1e-4 and n = 5, the value those runs actually used.
  lrn_alpha_over_n: bool = False
  # Sec. 3.3: LRN works within a column (the original code never crosses
  # columns). True: the window runs over both columns' channels, as Caffe's bvlc_alexnet
  # does (its LRN layer does not know about groups), at the cost of gathering both
  # columns before lrn1 and lrn2.
  lrn_across_columns: bool = False
  # Sec. 3.3 order for layer 1: conv -> ReLU -> LRN -> pool. The original code normalises
  # conv1 before its ReLU: conv -> LRN -> ReLU -> pool.
  lrn1_before_relu: bool = False
  # Not in the paper: the original code's extra within-channel contrast normalisation after
  # conv2 (cuda-convnet's `cnorm` layer), applied after conv2's ReLU, before lrn2 (the
  # released notes say only "after conv2": its place relative to lrn2 is this project's reading):
  #   b = a / (1 + alpha / size^2 * sum_{size x size window} (a - m)^2)^beta,
  # m the mean of a over the size x size window around each position (zero beyond the
  # edges, divided by size^2), all within one channel. Its scale and power in the 2012
  # layer-params file are not known here: the defaults below are cuda-convnet's documented
  # example scale (0.001) with the LRN's power, a guess to replace when the file is known.
  cnorm2: bool = False
  cnorm2_size: int = 5
  cnorm2_alpha: float = 1e-3
  cnorm2_beta: float = 0.75
  # Sec. 3.4 overlapping pooling: z = 3, s = 2 (z = 2 is the non-overlapping ablation).
  pool_window: int = 3
  pool_stride: int = 2
  # Sec. 4.2 dropout on fc6 and fc7 outputs. 'paper': no rescale while training, outputs
  # times (1 - rate) at test; 'inverted': divide by (1 - rate) while training.
  dropout_rate: float = 0.5
  dropout_form: str = 'paper'
  # Sec. 5 init: 'paper' = N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7;
  # 'caffe' = bvlc_alexnet's fallback (fc6/fc7 std 0.005, those biases 0.1);
  # 'he' = variance-preserving (not the paper's): learns from the first steps, for short
  # demo runs where N(0, 0.01) would sit on the flat start for epochs.
  init: str = 'paper'
  init_std: float = 0.01  # Sec. 5: N(0, 0.01); conv3-conv5 use init_std_conv345.
  # Sec. 5: 0.01 for every layer. The original code draws conv3-conv5 with std 0.03.
  # Used by the 'paper' and 'caffe' schemes ('he' sets its own).
  init_std_conv345: float = 0.01
  # Compute dtype of activations and matmuls ('float32' or 'bfloat16'); params stay float32.
  dtype: str = 'float32'

  def __post_init__(self):
    # Config values arrive as lists, ints for floats and so on: one canonical, hashable form.
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      kind = type(f.default)
      value = tuple(int(v) for v in value) if kind is tuple else kind(value)
      object.__setattr__(self, f.name, value)
    _choice('columns', self.columns, (1, 2))
    _choice('image_size', self.image_size, (224, 227), '224 (padded conv1) or 227')
    _choice('activation', self.activation, ('relu', 'tanh'))
    _choice('dropout_form', self.dropout_form, ('paper', 'inverted'))
    _choice('init', self.init, ('paper', 'caffe', 'he'))
    _choice('remove_conv', self.remove_conv, ('', 'conv3', 'conv4', 'conv5'))
    _choice('dtype', self.dtype, ('float32', 'bfloat16'))
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'model.dropout_rate must be in [0, 1), got {self.dropout_rate}.')
    if self.pool_window < 1 or self.pool_stride < 1:
      raise ValueError('model.pool_window and model.pool_stride must be positive.')
    if self.lrn_n < 1 or self.lrn_n % 2 == 0:
      raise ValueError(f'model.lrn_n must be odd and positive, got {self.lrn_n}.')
    if self.cnorm2_size < 1:
      raise ValueError(f'model.cnorm2_size must be positive, got {self.cnorm2_size}.')
    if len(self.conv_features) != 5 or len(self.fc_features) != 2:
      raise ValueError('model.conv_features needs 5 entries and model.fc_features 2.')
    if self.columns == 2 and any(f % 2 for f in self.conv_features + self.fc_features):
      raise ValueError('With two columns every layer width must be even (half per column).')

  @property
  def lrn_scale(self) -> float:
    """What multiplies LRN's sum of squares: alpha (Sec. 3.3) or alpha / n."""
    return self.lrn_alpha / self.lrn_n if self.lrn_alpha_over_n else self.lrn_alpha

  @property
  def conv_widths(self) -> tuple[int, ...]:
    """Kernels per column, conv1..conv5."""
    if self.columns == 2:
      return tuple(f // 2 for f in self.conv_features)
    # Sec. 3.2's comparison: the one-column net has half the kernels in conv1-conv4 but the
    # full conv5 and fully-connected layers, so that parameter counts stay close.
    return tuple(f // 2 for f in self.conv_features[:4]) + (self.conv_features[4],)

  @property
  def fc_widths(self) -> tuple[int, ...]:
    """Neurons per column, fc6 and fc7."""
    return tuple(f // 2 for f in self.fc_features) if self.columns == 2 else self.fc_features

  @property
  def layers(self) -> tuple[str, ...]:
    """The learned layers of this network, in order."""
    return tuple(name for name in LAYERS if name != self.remove_conv)

  @classmethod
  def from_config(cls, cfg) -> 'Spec':
    """The Spec of a model ConfigDict (or of a Spec); missing fields take the defaults."""
    if isinstance(cfg, Spec):
      return cfg
    return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})


def model_config() -> ml_collections.ConfigDict:
  """The paper's network as a ConfigDict; each field can be switched for an ablation."""
  return ml_collections.ConfigDict(dataclasses.asdict(Spec()))


# ---------------------------------------------------------------------------------------
# Parameters


def conv1_padding(image_size: int) -> tuple[int, int]:
  """Zero padding (before, after) that makes conv1's output 55x55 (Sec. 3.5, Fig. 2).

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


_ONE_BIASES = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')


def init_scheme(spec: Spec, name: str, kernel_shape: tuple[int, ...]) -> tuple[float, float]:
  """(weight std, bias value) of a layer: Sec. 5, weights N(0, 0.01), biases 1 in conv2,
  conv4, conv5, fc6, fc7 and 0 elsewhere.

  "This initialization accelerates the early stages of learning by providing the ReLUs
  with positive inputs." The 'caffe' scheme is bvlc_alexnet's fallback for runs where
  biases of 1 leave the loss flat: std 0.005 in fc6/fc7 and those biases 0.1.
  """
  std, bias = spec.init_std, (1.0 if name in _ONE_BIASES else 0.0)
  if name in ('conv3', 'conv4', 'conv5'):
    std = spec.init_std_conv345  # Sec. 5: 0.01; the original code: 0.03.
  if spec.init == 'caffe' and name in _ONE_BIASES:
    bias = 0.1
    std = 0.005 if name in ('fc6', 'fc7') else std
  elif spec.init == 'he':
    # Variance-preserving through ReLUs (std sqrt(2 / fan_in); fc8 sqrt(1 / fan_in)),
    # so a short run learns from its first steps. It assumes unit-scale inputs
    # (config.data.input_scale = 1/60): with raw 0-255 values conv1's gradients are
    # ~60x its weights' scale and the first steps diverge.
    fan_in = int(np.prod(kernel_shape[-4:-1] if name.startswith('conv') else kernel_shape[-2]))
    std, bias = float(np.sqrt((1.0 if name == 'fc8' else 2.0) / fan_in)), 0.0
  return std, bias


# ---------------------------------------------------------------------------------------
# Layers


def local_response_norm(a: jax.Array, *, k: float, n: int, alpha: float, beta: float) -> jax.Array:
  """Sec. 3.3: b_i = a_i / (k + alpha * sum_{|j - i| <= n/2} a_j^2)^beta over channels.

  The sum is not divided by n (Caffe and PyTorch divide alpha by n); `_window_sum` says
  how it is computed on each backend. It runs in float32 (the power is sensitive to
  rounding in bfloat16).
  """
  return _lrn(a.astype(jnp.float32), k, n, alpha, beta).astype(a.dtype)


def _window_sum(x: jax.Array, n: int) -> jax.Array:
  """sum_{|j - i| <= n/2} x_j over the last axis (zero beyond the edges).

  On XLA:CPU a product with a banded 0/1 matrix: one matmul, where a reduce_window over
  channels is slow. Elsewhere a sum of n shifted slices, which fuses with the elementwise
  work around it; XLA:GPU's Triton GEMM cannot tile that thin float32 matmul for an A100
  ("Couldn't find output tile sizes", found by `python -m alexnet_jax.aot`).
  """
  return jax.lax.platform_dependent(x, cpu=functools.partial(_band_matmul_sum, n=n),
                                    default=functools.partial(_shifted_sum, n=n))


def _band_matmul_sum(x: jax.Array, n: int) -> jax.Array:
  idx = np.arange(x.shape[-1])
  band = (np.abs(idx[:, None] - idx[None, :]) <= n // 2).astype(np.float32)
  return jnp.dot(x, band, precision=jax.lax.Precision.HIGHEST)


def _shifted_sum(x: jax.Array, n: int) -> jax.Array:
  half, channels = n // 2, x.shape[-1]
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)])
  return sum(jax.lax.slice_in_dim(padded, i, i + channels, axis=x.ndim - 1) for i in range(n))


# The analytic gradient costs about half of what autodiff of the power gives on XLA:CPU.
# With s_i = k + alpha * sum_{j in N(i)} a_j^2 (N symmetric, so one window sum serves):
#   dL/da_j = g_j s_j^-beta - 2 alpha beta a_j sum_{i in N(j)} g_i a_i s_i^(-beta - 1).
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(a, k, n, alpha, beta):
  return _lrn_fwd(a, k, n, alpha, beta)[0]


def _lrn_fwd(a, k, n, alpha, beta):
  s = k + alpha * _window_sum(a * a, n)
  if beta == 0.75:
    # The paper's beta: s^-0.75 = s^-0.5 * (s^-0.5)^0.5, two cheap square roots where
    # power (exp and log) was the costliest part of lrn1 on XLA:CPU.
    root = jax.lax.rsqrt(s)
    scale = root * jnp.sqrt(root)
  else:
    scale = jnp.power(s, -beta)
  return a * scale, (a, s, scale)


def _lrn_bwd(k, n, alpha, beta, residuals, g):
  del k
  a, s, scale = residuals
  inner = _window_sum(g * a * scale / s, n)
  return (g * scale - (2.0 * alpha * beta) * a * inner,)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def _box_sum(x: jax.Array, size: int) -> jax.Array:
  """Sum over the size x size window starting size // 2 before each position (zero beyond
  the edges), as two separable passes of shifted slices: cheap, and plain to differentiate."""
  before, after = size // 2, size - 1 - size // 2
  for axis in (1, 2):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (before, after)
    padded = jnp.pad(x, pad)
    length = x.shape[axis]
    x = sum(jax.lax.slice_in_dim(padded, i, i + length, axis=axis) for i in range(size))
  return x


def contrast_norm(a: jax.Array, *, size: int, alpha: float, beta: float) -> jax.Array:
  """cuda-convnet's `cnorm` layer, within each channel over a size x size window:

    b = a / (1 + alpha / size^2 * sum_window (a - m)^2)^beta,  m = sum_window a / size^2.

  As in cuda-convnet's ContrastNormLayer: the window of a position starts size // 2 before
  it, positions outside the image count as zero in m's sum (which is still divided by
  size^2) and are left out of the sum of squares; each (a - m) in that sum is taken at the
  neighbour's own window mean. The numerator is a itself, not a - m. Runs in float32.
  """
  x = a.astype(jnp.float32)
  area = float(size * size)
  diff = x - _box_sum(x, size) / area
  # The zero padding of _box_sum leaves positions beyond the edges out of the sum of squares.
  denom = 1.0 + (alpha / area) * _box_sum(diff * diff, size)
  return (x * jnp.power(denom, -beta)).astype(a.dtype)


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Sec. 3.4: overlapping pooling (z = 3 > s = 2) with the default config."""
  return _max_pool(x, window, stride)


# reduce_window's gradient (select_and_scatter) runs 3x slower on XLA:CPU than this one.
# Per window offset (i, j): a strided slice of x compared with the output gives the
# positions that offset's input held the maximum, and their share of the incoming
# gradient. The gradient goes to the first maximum of each window in row-major order, as
# select_and_scatter's does. The shares are summed per phase of the input (row mod stride,
# column mod stride), where offset (i, j) lands at output position shifted by
# (i // stride, j // stride), and the stride x stride phases are interleaved once at the
# end: one pass over the input's size instead of a padded full-size sum per offset (2x
# faster again).
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
  s = stride
  phase_h, phase_w = -(-height // s), -(-width // s)  # Rows and columns of each phase.
  zero = jnp.zeros((), g.dtype)
  taken = None
  phases = {}
  for i in range(window):
    for j in range(window):
      end_h, end_w = i + s * (out_h - 1) + 1, j + s * (out_w - 1) + 1
      at = jax.lax.slice(x, (0, i, j, 0), (n, end_h, end_w, channels), (1, s, s, 1))
      hit = at == y
      if taken is not None:
        hit = hit & ~taken
      taken = hit if taken is None else taken | hit
      # Input row s * o + i is row o + i // s of phase i % s.
      shift_h, shift_w = i // s, j // s
      share = jnp.pad(jnp.where(hit, g, zero),
                      ((0, 0), (shift_h, phase_h - out_h - shift_h),
                       (shift_w, phase_w - out_w - shift_w), (0, 0)))
      key = (i % s, j % s)
      phases[key] = share + phases[key] if key in phases else share
  none = jnp.zeros((n, phase_h, phase_w, channels), g.dtype)  # Phases no window reaches.
  dx = jnp.stack([jnp.stack([phases.get((a, b), none) for b in range(s)], axis=3)
                  for a in range(s)], axis=2)  # [n, phase_h, s, phase_w, s, channels]
  dx = dx.reshape(n, phase_h * s, phase_w * s, channels)
  return (dx[:, :height, :width],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, stride: int = 1,
         padding=((0, 0), (0, 0))) -> jax.Array:
  # One ungrouped convolution per column: XLA:CPU runs grouped convolutions (and what
  # vmap over the column axis lowers to) 6-12x slower than the same work ungrouped.
  y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (stride, stride), padding,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + bias.astype(x.dtype)


# ---------------------------------------------------------------------------------------
# The layers as Flax modules


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where this computation's columns and examples sit in the whole network and batch.

  gather: takes this device's columns' activations (concatenated on the last axis) to
    all columns' (column 0 first): the communication between columns before conv3, fc6
    and fc7.
  sum_columns: adds this device's columns' partial fc8 logits to the other devices'
    (the exchange before fc8).
  first_column / first_example: global indices of this device's first column and
    example, so that dropout masks are drawn per (column, example) whatever the layout.
  """
  gather: Callable[[jax.Array], jax.Array] = lambda x: x
  sum_columns: Callable[[jax.Array], jax.Array] = lambda x: x
  first_column: Any = 0
  first_example: Any = 0


class ColumnConv(nn.Module):
  """One convolution per column: kernel [columns, k, k, in, out], bias [columns, out].

  Takes one input per column and returns one output per column (before the activation).
  Each column is an ungrouped convolution: XLA:CPU runs grouped convolutions (and what
  vmap over the column axis lowers to) 6-12x slower than the same work ungrouped.
  """
  columns: int
  features: int
  kernel_size: int
  std: float
  bias_init: float
  stride: int = 1
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.normal(self.std),
                        (self.columns, k, k, xs[0].shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init),
                      (self.columns, self.features))
    return [conv(x.astype(self.dtype), kernel[c], bias[c], stride=self.stride,
                 padding=self.padding) for c, x in enumerate(xs)]


class ColumnDense(nn.Module):
  """One fully connected layer per column, all reading the same input x:
  kernel [columns, in, out], bias [columns, out]; returns one output per column."""
  columns: int
  features: int
  std: float
  bias_init: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    kernel = self.param('kernel', nn.initializers.normal(self.std),
                        (self.columns, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init),
                      (self.columns, self.features))
    # One matmul batched over the kernel's column axis: kernel[c] would copy each column's
    # slice (fc6's is 75 MB) before its own matmul, and the gradient would be stacked back.
    x = jnp.broadcast_to(x.astype(self.dtype), (self.columns,) + x.shape)
    y = jax.lax.dot_general(x, kernel.astype(self.dtype), (((2,), (1,)), ((0,), (0,))))
    y = y + bias[:, None, :].astype(self.dtype)
    return [y[c] for c in range(self.columns)]


class ColumnSumDense(nn.Module):
  """fc8: one layer over both columns' fc7 outputs, kernel [in, out] (column 0's rows
  first) and bias [out], given only this device's columns' inputs and kernel rows.

  Returns float32 logits: the partial products summed over the devices by `sum_columns`
  (in float32, whatever the compute dtype), plus the bias.
  """
  features: int
  std: float
  bias_init: float
  sum_columns: Callable[[jax.Array], jax.Array]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.normal(self.std), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init), (self.features,))
    partial = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    return self.sum_columns(partial.astype(jnp.float32)) + bias


class LocalResponseNorm(nn.Module):
  """Sec. 3.3 across the channels of one column (see `local_response_norm`); alpha is what
  multiplies the sum of squares (`Spec.lrn_scale`: alpha, or alpha / n)."""
  k: float
  n: int
  alpha: float
  beta: float

  def __call__(self, x: jax.Array) -> jax.Array:
    return local_response_norm(x, k=self.k, n=self.n, alpha=self.alpha, beta=self.beta)


class ContrastNorm(nn.Module):
  """The original code's within-channel contrast normalisation (see `contrast_norm`)."""
  size: int
  alpha: float
  beta: float

  def __call__(self, x: jax.Array) -> jax.Array:
    return contrast_norm(x, size=self.size, alpha=self.alpha, beta=self.beta)


class MaxPool(nn.Module):
  """Sec. 3.4 max pooling with the fast gradient of `max_pool`."""
  window: int
  stride: int

  def __call__(self, x: jax.Array) -> jax.Array:
    return max_pool(x, self.window, self.stride)


class ColumnDropout(nn.Module):
  """Sec. 4.2: each hidden neuron's output set to zero with probability `rate`.

  'paper' form: no rescale while training and outputs multiplied by (1 - rate) at test;
  'inverted': divide by (1 - rate) while training, identity at test. The mask of example
  e in column c comes from fold_in(fold_in(key, c), e), with `key` this module's
  'dropout' rng (the same on every device): independent of how the batch and the columns
  are split across devices.
  """
  rate: float
  form: str = 'paper'
  placement: Placement = Placement()

  @nn.compact
  def __call__(self, xs: list[jax.Array], *, train: bool) -> list[jax.Array]:
    keep = 1.0 - self.rate
    placement = self.placement
    if not train:
      return [x * keep if self.form == 'paper' else x for x in xs]
    if self.rate == 0.0:
      return xs
    key = self.make_rng('dropout')
    out = []
    for c, x in enumerate(xs):
      column_key = jax.random.fold_in(key, placement.first_column + c)
      examples = placement.first_example + jnp.arange(x.shape[0])
      mask = jax.vmap(lambda e: jax.random.bernoulli(  # pylint: disable=cell-var-from-loop
          jax.random.fold_in(column_key, e), keep, x.shape[1:]))(examples)
      x = jnp.where(mask, x, jnp.zeros_like(x))
      out.append(x / keep if self.form == 'inverted' else x)
    return out


def _same(pad: int):
  return ((pad, pad), (pad, pad))


# ---------------------------------------------------------------------------------------
# The network


class AlexNet(nn.Module):
  """The two-column network of Fig. 2 (or an ablation of it) from a model config.

  config: a model ConfigDict (`model_config()`) or its `Spec`.
  columns_here: the columns whose parameters this computation holds (all of them by
    default; one per device when `alexnet_jax.parallel` splits the columns over devices).

  __call__(images, train=False, layer=None, placement=Placement()) returns the logits
  [N, num_classes] in float32, or `layer`'s activations (both columns, column 0 first).
  Dropout (train=True) draws from the 'dropout' rng: `rngs={'dropout': key}`.
  """
  config: Any
  columns_here: int | None = None

  def __post_init__(self):
    # Validated once, and hashable from here on.
    object.__setattr__(self, 'config', Spec.from_config(self.config))
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False, layer: str | None = None,
               placement: Placement = Placement()) -> jax.Array:
    spec = self.config
    dtype = jnp.dtype(spec.dtype)
    act = jax.nn.relu if spec.activation == 'relu' else jnp.tanh
    columns = self.columns_here or spec.columns
    shapes = param_shapes(spec)

    def column_conv(name, features, kernel_size, **kw):
      std, bias = init_scheme(spec, name, shapes[name]['kernel'])
      return ColumnConv(columns, features, kernel_size, std, bias, dtype=dtype, name=name, **kw)

    def lrn(xs, name):
      if not spec.lrn:
        return xs
      norm = LocalResponseNorm(spec.lrn_k, spec.lrn_n, spec.lrn_scale, spec.lrn_beta, name=name)
      if not (spec.lrn_across_columns and spec.columns == 2):
        return [norm(x) for x in xs]
      # Caffe's LRN window runs over all channels: normalise both columns' maps together,
      # then keep this device's columns.
      out = norm(both(xs, name))
      width = xs[0].shape[-1]
      return [jax.lax.dynamic_slice_in_dim(out, (placement.first_column + c) * width, width,
                                           axis=out.ndim - 1) for c in range(len(xs))]

    def pool(xs, name):
      pooling = MaxPool(spec.pool_window, spec.pool_stride, name=name)
      return [pooling(x) for x in xs]

    def both(xs, reader):  # Every column's activations, column 0 first.
      # The paper's exchanges (Sec. 3.2) carry the name of the layer that reads them, so
      # they can be told apart in a compiled program (alexnet_jax.aot).
      with jax.named_scope(f'exchange_before_{reader}'):
        return placement.gather(jnp.concatenate(xs, axis=-1))

    found = {}
    # apply(..., mutable=['activations']) records every layer on the way (`activations`):
    # one pass instead of one per layer. Skipped otherwise, so no gather is traced for it,
    # and in init (which makes every collection mutable) so that init gives params only.
    record = self.is_mutable_collection(ACTIVATIONS_COLLECTION) and not self.is_initializing()

    def keep(name, x):
      self.sow(ACTIVATIONS_COLLECTION, 'layers', {name: x}, init_fn=dict,
               reduce_fn=lambda seen, new: {**seen, **new})

    def reached(name, xs):
      if record:
        keep(name, both(xs, 'output'))
      if layer == name:
        found[name] = both(xs, 'output')
      return layer == name

    w1, w2, w3, w4, w5 = spec.conv_widths
    pad1 = conv1_padding(spec.image_size)
    # conv1 and conv2 (Fig. 2): each column reads the image, then only its own maps.
    h = column_conv('conv1', w1, 11, stride=4, padding=(pad1, pad1))([images] * columns)
    if spec.lrn1_before_relu:
      # The original code: conv1 -> LRN -> ReLU ('conv1' is then before its ReLU).
      if reached('conv1', h): return found['conv1']
      h = [act(y) for y in lrn(h, 'lrn1')]
    else:
      h = [act(y) for y in h]
      if reached('conv1', h): return found['conv1']
      h = lrn(h, 'lrn1')
    if reached('lrn1', h): return found['lrn1']
    h = pool(h, 'pool1')
    if reached('pool1', h): return found['pool1']
    h = [act(y) for y in column_conv('conv2', w2, 5, padding=_same(2))(h)]
    if reached('conv2', h): return found['conv2']
    if spec.cnorm2:
      norm = ContrastNorm(spec.cnorm2_size, spec.cnorm2_alpha, spec.cnorm2_beta, name='cnorm2')
      h = [norm(x) for x in h]
      if reached('cnorm2', h): return found['cnorm2']
    h = lrn(h, 'lrn2')
    if reached('lrn2', h): return found['lrn2']
    h = pool(h, 'pool2')
    if reached('pool2', h): return found['pool2']
    # conv3 reads both columns; conv4 and conv5 only their own.
    x = both(h, next(n for n in ('conv3', 'conv4', 'conv5') if n != spec.remove_conv))
    h = None
    for name, width in (('conv3', w3), ('conv4', w4), ('conv5', w5)):
      if name == spec.remove_conv:
        continue
      inputs = [x] * columns if h is None else h
      h = [act(y) for y in column_conv(name, width, 3, padding=_same(1))(inputs)]
      if reached(name, h): return found[name]
    h = pool(h, 'pool5')
    if reached('pool5', h): return found['pool5']
    # fc6 and fc7 read both columns. Flattening (H, W, C) after the gather puts column 0's
    # channels first at every position, as the documented fc6 layout says.
    x = both(h, 'fc6')
    x = x.reshape(x.shape[0], -1)
    for (name, dropout), width in zip((('fc6', 'dropout6'), ('fc7', 'dropout7')), spec.fc_widths):
      std, bias = init_scheme(spec, name, shapes[name]['kernel'])
      h = [act(y) for y in ColumnDense(columns, width, std, bias, dtype=dtype, name=name)(x)]
      h = ColumnDropout(spec.dropout_rate, spec.dropout_form, placement, name=dropout)(
          h, train=train)
      if reached(name, h): return found[name]
      if name == 'fc6':
        x = both(h, 'fc7')
    # fc8: one layer reading both halves of fc7 (original code). Each device multiplies its
    # columns' halves by their rows of the kernel and the columns' partial logits are summed:
    # the exchange before fc8. The logits are then the same on every device, so fc8's
    # kernel needs no gradient sum over the columns' devices (alexnet_jax.parallel).
    std, bias = init_scheme(spec, 'fc8', shapes['fc8']['kernel'])
    with jax.named_scope('exchange_before_fc8'):
      logits = ColumnSumDense(spec.num_classes, std, bias, placement.sum_columns, dtype=dtype,
                              name='fc8')(jnp.concatenate(h, axis=-1))
    logits = logits.astype(jnp.float32)
    if record:
      keep('fc8', logits)
    return logits


def forward(params: Params, images: jax.Array, spec: Spec, *, train: bool = False,
            rng: jax.Array | None = None, layer: str | None = None,
            placement: Placement = Placement()) -> jax.Array:
  """`AlexNet` on the columns present in `params` (all of them, or this device's).

  No validation and no jit: `apply` is the checked entry point, and
  `alexnet_jax.parallel` calls this inside `jax.shard_map`.
  """
  net = AlexNet(spec, columns_here=params['conv1']['kernel'].shape[0])
  return net.apply({'params': params}, images, train=train, layer=layer, placement=placement,
                   rngs=None if rng is None else {'dropout': rng})


@functools.partial(jax.jit, static_argnums=1)
def _init(rng, spec):
  # The forward pass that init traces is dead code here: XLA drops it.
  images = jnp.zeros((1, spec.image_size, spec.image_size, 3), jnp.float32)
  return AlexNet(spec).init({'params': rng}, images)['params']


def init_params(rng: jax.Array, cfg) -> Params:
  """`AlexNet(cfg).init(rng, images)['params']`: Sec. 5's initialisation (`init_scheme`)
  in the documented layout (`param_shapes`)."""
  return _init(rng, Spec.from_config(cfg))


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
  if layer == 'cnorm2' and not spec.cnorm2:
    raise ValueError("layer 'cnorm2' exists only with model.cnorm2=True (the original code's "
                     'extra normalisation).')


# Plain jax.jit, not compiler.jit: apply is a pure function users call inside their own
# jit and grad, where compiler options are not allowed.
@functools.partial(jax.jit, static_argnames=('spec', 'train', 'layer'))
def _apply(params, images, rng, spec, train, layer):
  return forward(params, images, spec, train=train, rng=rng, layer=layer)


def apply(params: Params, images: jax.Array, cfg, *, train: bool = False,
          rng: jax.Array | None = None, layer: str | None = None) -> jax.Array:
  """Logits [N, num_classes] of mean-subtracted images [N, 224, 224, 3], on one device.

  train=True applies dropout with `rng` (a jax.random.key). layer='fc7' (or any name in
  ACTIVATIONS) returns that layer's activations instead, both columns concatenated with
  column 0's channels first: after the ReLU for conv and fc layers, and after dropout
  (or its test-time scaling) for fc6 and fc7. With model.lrn1_before_relu, 'conv1' is
  before its ReLU and 'lrn1' after it.
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

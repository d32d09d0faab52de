"""The paper's layers (Sec. 3.3-3.4, Fig. 2): LRN, the original code's contrast norm and
overlapping max-pooling with hand-written gradients (custom VJPs), the convolution, and the
per-column Flax modules that `network.AlexNet` is built from.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np



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

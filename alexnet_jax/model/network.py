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

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.model.layers import (ColumnConv, ColumnDense, ColumnDropout, ColumnSumDense,
                                      ContrastNorm, LocalResponseNorm, MaxPool, Placement)
from alexnet_jax.model.spec import (ACTIVATIONS, ACTIVATIONS_COLLECTION, Params, Spec,
                                    conv1_padding, init_scheme, param_shapes)



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

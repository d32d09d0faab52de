"""The parallel layout: the network on a ('data', 'model') device mesh (Sec. 3.2).

The 'model' axis holds the paper's columns: with size 2 each device keeps one column's
parameters and computes one column, and the columns exchange activations only where
the paper says (before conv3, fc6, fc7 and fc8), with `jax.lax.all_gather` on 'model'
inside one `jax.shard_map`. With size 1 the same per-column code runs both columns on
each device. The batch is split over 'data'.

The loss is the mean over the global batch computed inside the shard_map; `jax.grad`
of it (taken outside, on global arrays) is the exact gradient whatever the layout: JAX
transposes the collectives, which sums the gradients of replicated parameters over
'data' (the average of the per-device batch means) and routes each column's gradient
back to the device that holds it.

Mappers (config.mesh.mapper): 'shard_map' (the default) runs every layout. 'pmap' runs
the same per-column code under `jax.pmap` over the one mesh axis that is larger than 1:
the paper's two columns on two devices (axis 'model', activations exchanged with
`all_gather`) or pure data parallelism (axis 'data'). On current JAX `jax.pmap` is
`jit(shard_map)` over one axis, and nesting two pmaps (data and model) fails with a mesh
error, so a mesh with both axes larger than 1 is a ValueError under 'pmap'.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax import model

AXES = ('data', 'model')
MAPPERS = ('shard_map', 'pmap')


def make_mesh(data: int = -1, model_size: int = 1, devices=None) -> jax.sharding.Mesh:
  """A ('data', 'model') mesh; data=-1 takes every device the model axis leaves."""
  devices = list(jax.devices() if devices is None else devices)
  if model_size not in (1, 2):
    raise ValueError(f'The model axis holds the columns and must be 1 or 2, got {model_size} '
                     '(config.mesh.model).')
  if data == -1:
    data = max(len(devices) // model_size, 1)
  if data < 1 or data * model_size > len(devices):
    raise ValueError(f'A {data}x{model_size} (data x model) mesh needs {data * model_size} devices, '
                     f'{len(devices)} are available: change config.mesh.')
  return jax.make_mesh((data, model_size), AXES, devices=devices[:data * model_size])


def check_layout(mesh, spec: model.Spec, batch_size: int) -> None:
  """Raises ValueError, before anything compiles, for a layout that cannot hold this run."""
  if tuple(mesh.axis_names) != AXES:
    raise ValueError(f'The mesh must have axes {AXES}, got {tuple(mesh.axis_names)}.')
  model_size = mesh.shape['model']
  if model_size not in (1, 2):
    raise ValueError(f"The mesh's model axis holds the columns and must be 1 or 2, got {model_size}.")
  if spec.columns % model_size:
    raise ValueError(f'A {spec.columns}-column model cannot be split over a model axis of '
                     f'{model_size}: set config.mesh.model=1.')
  data = mesh.shape['data']
  if batch_size % data:
    raise ValueError(f'The batch of {batch_size} is not divisible by the data axis of {data}: '
                     'change the batch size or config.mesh.data.')


def param_specs(spec: model.Spec):
  """Column layers are split over 'model' on their leading column axis; fc8 is replicated."""
  return {name: {'kernel': P() if name == 'fc8' else P('model'),
                 'bias': P() if name == 'fc8' else P('model')}
          for name in spec.layers}


def param_shardings(mesh, spec: model.Spec):
  return jax.tree.map(lambda p: NamedSharding(mesh, p), param_specs(spec))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _placement(mesh, spec: model.Spec, local_batch: int) -> model.Placement:
  local_columns = spec.columns // mesh.shape['model']
  return model.Placement(
      gather=lambda x: jax.lax.all_gather(x, 'model', axis=x.ndim - 1, tiled=True),
      first_column=jax.lax.axis_index('model') * local_columns,
      first_example=jax.lax.axis_index('data') * local_batch)


def sharded_forward(mesh, spec: model.Spec, *, train: bool = False, layer: str | None = None,
                    mapper: str = 'shard_map'):
  """f(params, images, rng) -> logits (or `layer`'s activations), sharded over `mesh`."""
  if _check_mapper(mesh, mapper) == 'pmap':
    return _pmap_forward(mesh, spec, train=train, layer=layer)

  def per_device(params, images, rng):
    out = model.forward(params, images, spec, train=train, rng=rng, layer=layer,
                        placement=_placement(mesh, spec, images.shape[0]))
    # Every device of a 'model' group holds the same values after the last gather; the
    # mean (exact for equal values) tells shard_map they are replicated over 'model'.
    return jax.lax.pmean(out, 'model')

  return jax.shard_map(per_device, mesh=mesh, in_specs=(param_specs(spec), P('data'), P()),
                       out_specs=P('data'))


def cross_entropy_and_errors(logits, labels):
  """Per-example softmax cross-entropy and top-1 / top-5 error indicators."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  ce = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  # Rank of the true class: the other classes scoring at least as high (ties count
  # against the model, so a constant output is never "right").
  true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  rank = jnp.sum(logits >= true_logit, axis=-1) - 1
  return ce, (rank >= 1).astype(jnp.float32), (rank >= 5).astype(jnp.float32)


def _loss_sums(params, images, labels, rng, spec, placement, global_batch):
  """This device's [cross-entropy, top-1 errors, top-5 errors] summed over its examples,
  divided by the global batch size: its share of the global-batch means."""
  logits = model.forward(params, images, spec, train=True, rng=rng, placement=placement)
  ce, top1, top5 = cross_entropy_and_errors(logits, labels)
  return jnp.stack([ce.sum(), top1.sum(), top5.sum()]) / global_batch


def sharded_loss(mesh, spec: model.Spec, global_batch: int, mapper: str = 'shard_map'):
  """f(params, images, labels, rng) -> (mean cross-entropy, {'top1_error', 'top5_error'}).

  Means over the global batch: each device sums its examples, divided by the global
  batch size, and the sums are added over 'data'. mapper: 'shard_map' or 'pmap'.
  """
  if _check_mapper(mesh, mapper) == 'pmap':
    return _pmap_loss(mesh, spec, global_batch)

  def per_device(params, images, labels, rng):
    sums = _loss_sums(params, images, labels, rng, spec,
                      _placement(mesh, spec, images.shape[0]), global_batch)
    sums = jax.lax.pmean(jax.lax.psum(sums, 'data'), 'model')
    return sums[0], {'top1_error': sums[1], 'top5_error': sums[2]}

  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(param_specs(spec), P('data'), P('data'), P()),
                       out_specs=(P(), P()))


def sharded_view_probs(mesh, spec: model.Spec):
  """f(params, images [N, V, H, W, 3]) -> softmax averaged over the V views [N, classes].

  Sec. 4.1: the 10-view test averages the softmax outputs of the ten patches.
  """

  def per_device(params, images):
    n, views = images.shape[:2]
    logits = model.forward(params, images.reshape((n * views,) + images.shape[2:]), spec,
                           placement=_placement(mesh, spec, n * views))
    probs = jax.nn.softmax(logits, axis=-1).reshape(n, views, -1).mean(axis=1)
    return jax.lax.pmean(probs, 'model')

  return jax.shard_map(per_device, mesh=mesh, in_specs=(param_specs(spec), P('data')),
                       out_specs=P('data'))


# ---------------------------------------------------------------------------------------
# The pmap mapper: one named axis, the same per-column code.


def _check_mapper(mesh, mapper: str) -> str:
  if mapper not in MAPPERS:
    raise ValueError(f"config.mesh.mapper must be one of {MAPPERS}, got {mapper!r}.")
  if mapper == 'pmap' and mesh.shape['data'] > 1 and mesh.shape['model'] > 1:
    raise ValueError(f"mapper='pmap' maps one axis, but the mesh is {mesh.shape['data']}x"
                     f"{mesh.shape['model']} (data x model): nested pmaps fail on current JAX. "
                     "Use config.mesh.mapper='shard_map', or a mesh with data=1 or model=1.")
  return mapper


def _pmap_plan(mesh, spec: model.Spec):
  """(axis name, its size, params -> pmap operands, their in_axes, placement factory)."""
  devices = list(mesh.devices.flat)
  if mesh.shape['model'] > 1:
    # One column per device: column layers' leading axis [C, ...] becomes [C, C/C, ...]
    # (pmap takes the first axis away; forward wants a column axis). fc8 is broadcast.
    size = mesh.shape['model']

    def operands(params):
      return {name: {leaf: (x if name == 'fc8' else x.reshape((size, -1) + x.shape[1:]))
                     for leaf, x in layer.items()} for name, layer in params.items()}

    axes = {name: {'kernel': None if name == 'fc8' else 0, 'bias': None if name == 'fc8' else 0}
            for name in spec.layers}
    local_columns = spec.columns // size

    def placement(local_batch):
      del local_batch
      return model.Placement(
          gather=lambda x: jax.lax.all_gather(x, 'model', axis=x.ndim - 1, tiled=True),
          first_column=jax.lax.axis_index('model') * local_columns)

    return 'model', size, devices, operands, axes, placement, False
  size = mesh.shape['data']

  def placement(local_batch):
    return model.Placement(first_example=jax.lax.axis_index('data') * local_batch)

  return 'data', size, devices, (lambda params: params), None, placement, True


def _unsharded(tree, mesh):
  """Drops the ('data', 'model') mesh's explicit shardings from traced values: pmap brings
  its own one-axis mesh, and shardings that name the other mesh's axes fail inside it."""
  def drop(x):
    sharding = getattr(jax.typeof(x), 'sharding', None)
    if sharding is None or not any(sharding.spec):
      return x
    return jax.sharding.reshard(x, NamedSharding(mesh, P()))
  return jax.tree.map(drop, tree)


def _resharded(x, aval):
  sharding = getattr(aval, 'sharding', None)
  if sharding is None or sharding.mesh.empty:
    return x
  return jax.sharding.reshard(x, sharding)


def _split(x, size, batch_split):
  """The batch split over 'data' ([N, ...] -> [size, N/size, ...]), else broadcast (None)."""
  return x.reshape((size, x.shape[0] // size) + x.shape[1:]) if batch_split else x


def _pmap_forward(mesh, spec: model.Spec, *, train: bool, layer: str | None):
  axis, size, devices, operands, param_axes, placement, batch_split = _pmap_plan(mesh, spec)
  batch_axis = 0 if batch_split else None

  def per_device(params, images, rng):
    return model.forward(params, images, spec, train=train, rng=rng, layer=layer,
                         placement=placement(images.shape[0]))

  mapped = jax.pmap(per_device, axis_name=axis, in_axes=(param_axes, batch_axis, None),
                    devices=devices)

  def forward(params, images, rng):
    params, images, rng = _unsharded((params, images, rng), mesh)
    out = mapped(operands(params), _split(images, size, batch_split), rng)
    # Over 'data' the devices hold consecutive slices of the batch; over 'model' every
    # device holds the whole (gathered) output.
    return out.reshape((-1,) + out.shape[2:]) if batch_split else out[0]

  return forward


def _pmap_loss(mesh, spec: model.Spec, global_batch: int):
  """The loss under pmap, differentiated inside the pmap (the classic pmap pattern).

  JAX 0.10 cannot transpose a pmap inside a jit whose values carry the ('data', 'model')
  mesh's explicit shardings (cotangent types differ in sharding only), so `jax.grad`
  taken outside sees this function through a custom VJP whose backward pass scales the
  gradients computed inside the pmap. Per device the gradient is of its share of the
  loss: its examples' sum / global batch over 'data'; over 'model', where every device
  computes the whole loss, 1/size of it (all_gather's transpose adds the shares of the
  columns' devices). Shares of broadcast (replicated) parameters are added outside.
  """
  axis, size, devices, operands, param_axes, placement, batch_split = _pmap_plan(mesh, spec)
  batch_axis = 0 if batch_split else None
  share = 1.0 if batch_split else 1.0 / size

  def per_device(params, images, labels, rng):
    def loss_share(p):
      sums = share * _loss_sums(p, images, labels, rng, spec, placement(images.shape[0]),
                                global_batch)
      return sums[0], sums

    (_, sums), grads = jax.value_and_grad(loss_share, has_aux=True)(params)
    return grads, sums

  mapped = jax.pmap(per_device, axis_name=axis,
                    in_axes=(param_axes, batch_axis, batch_axis, None), devices=devices)

  def run(params, images, labels, rng):
    types = jax.tree.map(jax.typeof, params)
    replicated_type = jax.typeof(rng)  # The caller's replicated sharding (or none).
    params, images, labels, rng = _unsharded((params, images, labels, rng), mesh)
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
      # Outside the caller's jax.set_mesh: pmap brings its own one-axis mesh.
      grads, sums = mapped(operands(params), _split(images, size, batch_split),
                           _split(labels, size, batch_split), rng)
      # Split leaves come back with the device axis first; broadcast ones as one share
      # per device, added.
      axes = param_axes if param_axes is not None else jax.tree.map(lambda _: None, params)
      grads = jax.tree.map(lambda g, a, t: g.sum(axis=0) if a is None else g.reshape(t.shape),
                           grads, axes, types, is_leaf=lambda x: x is None)
      sums = sums.sum(axis=0)
    # Back to the parameters' own shardings (a custom VJP's cotangents must match them).
    grads = jax.tree.map(_resharded, grads, types)
    return _resharded(sums, replicated_type), grads

  @jax.custom_vjp
  def mean_sums(params, images, labels, rng):
    return run(params, images, labels, rng)[0]

  def mean_sums_fwd(params, images, labels, rng):
    sums, grads = run(params, images, labels, rng)
    return sums, (grads, images)

  def mean_sums_bwd(residuals, g):
    grads, images = residuals
    # Only the loss (sums[0]) is differentiable; the error rates are step functions.
    # The images' gradient is not computed (training never asks for it).
    return (jax.tree.map(lambda x: g[0] * x, grads), jnp.zeros_like(images), None, None)

  mean_sums.defvjp(mean_sums_fwd, mean_sums_bwd)

  def loss(params, images, labels, rng):
    sums = mean_sums(params, images, labels, rng)
    return sums[0], {'top1_error': sums[1], 'top5_error': sums[2]}

  return loss


def shard_params(params, mesh, spec: model.Spec):
  return jax.device_put(params, param_shardings(mesh, spec))


@functools.lru_cache(maxsize=32)
def _jitted_forward(mesh, spec, train, layer, mapper):
  return jax.jit(sharded_forward(mesh, spec, train=train, layer=layer, mapper=mapper))


def apply(params, images, cfg, mesh, *, train: bool = False, rng=None, layer: str | None = None,
          mapper: str = 'shard_map'):
  """`alexnet_jax.apply` with the columns and the batch laid out over `mesh`."""
  spec = model.Spec.from_config(cfg)
  model.validate_images(images, spec)
  model.validate_params(params, spec)
  model.check_layer(layer, spec)
  check_layout(mesh, spec, images.shape[0])
  _check_mapper(mesh, mapper)
  if train and rng is None:
    raise ValueError('apply(train=True) needs rng=jax.random.key(...) for dropout.')
  rng = jax.random.key(0) if rng is None else rng
  params = shard_params(params, mesh, spec)
  images = jax.device_put(images, batch_sharding(mesh))
  rng = jax.device_put(rng, replicated(mesh))
  return _jitted_forward(mesh, spec, train, layer, mapper)(params, images, rng)


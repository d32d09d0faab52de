"""The parallel layout: the network on a ('data', 'model') device mesh (Sec. 3.2).

`Layout` is built once per run (`Layout.for_run(run)`) and validated once. It
owns the mesh, the shardings of the parameters and the batch, where each device sits in
the network and the batch (`placement`), the mapper, and the conversion of each
process's batches into global arrays. Training, evaluation and the benchmarks take it.

The 'model' axis holds the paper's columns: with size 2 each device keeps one column's
parameters and computes one column, and the columns exchange activations only where
the paper says: `jax.lax.all_gather` on 'model' before conv3, fc6 and fc7, and before
fc8 a `jax.lax.psum` of each device's partial logits (its columns' fc7 units times their
rows of fc8's kernel), after which the logits and the loss are the same on every device
of a 'model' group. Backward, the all-gathers' transposes are reduce-scatters and the
sum's needs no communication, so nothing else crosses the 'model' axis
(`python -m alexnet_jax.aot` checks the compiled programs). With size 1 the same
per-column code runs both columns on each device. The batch is
split over 'data'.

The loss is the mean over the global batch computed inside the mapped function;
`jax.grad` of it (taken outside, on global arrays) is the exact gradient whatever the
layout: JAX transposes the collectives, which sums the gradients of replicated
parameters over 'data' (the average of the per-device batch means) and routes each
column's gradient back to the device that holds it.

Mappers (config.mesh.mapper): 'shard_map' (the default, here) runs every layout as one
`jax.shard_map` over the 2-D mesh. 'pmap' (alexnet_jax.parallel.pmap_mapper) runs the same
per-device code under `jax.pmap` over the one mesh axis larger than 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax import model
from alexnet_jax.parallel import compiler
from alexnet_jax.model import losses
from alexnet_jax.parallel import pmap_mapper

AXES = ('data', 'model')
MAPPERS = ('shard_map', 'pmap')
# config.mesh.model = AUTO: the paper's one column per device where there are 2 or more
# devices (and two columns), both columns on each device otherwise.
AUTO = -1


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """`config.mesh`, declared once (`mesh_config()` is its defaults) and validated once.

  model = 2 puts one column per device (the paper's two GPUs, Sec. 3.2); model = 1 keeps
  both columns on a device; model = -1 (AUTO) takes what the devices allow: 2 with two or
  more devices (2 x data of them with an explicit data), else 1 (`Layout.for_run` logs
  which). data = -1 uses all remaining devices. mapper: 'shard_map' runs every layout;
  'pmap' (jax.pmap over the one axis larger than 1) runs the paper's two columns on 2
  devices (data=1, model=2) or pure data parallelism (model=1), not both at once.
  """
  data: int = -1
  model: int = AUTO
  mapper: str = 'shard_map'

  def __post_init__(self):
    if self.mapper not in MAPPERS:
      raise ValueError(f"config.mesh.mapper must be one of {MAPPERS}, got {self.mapper!r}.")
    if self.model not in (AUTO, 1, 2):
      raise ValueError(f'The model axis holds the columns and must be 1 or 2 (or -1: what the '
                       f'devices allow), got {self.model} (config.mesh.model).')
    if self.data != -1 and self.data < 1:
      raise ValueError(f'config.mesh.data must be a positive number of devices or -1 (all '
                       f'that are left), got {self.data}.')

  @classmethod
  def from_config(cls, mesh_cfg) -> 'MeshSpec':
    if isinstance(mesh_cfg, cls):
      return mesh_cfg
    return cls(**{f.name: mesh_cfg[f.name] for f in dataclasses.fields(cls) if f.name in mesh_cfg})


def mesh_config() -> ml_collections.ConfigDict:
  """`config.mesh`: `MeshSpec`'s defaults as a ConfigDict."""
  return ml_collections.ConfigDict(dataclasses.asdict(MeshSpec()))


def model_axis(model_size: int, num_devices: int, columns: int = 2, data: int = -1) -> int:
  """config.mesh.model with AUTO resolved for `num_devices` devices and a data axis of
  `data` (-1: what is left): 2 where two columns fit beside the data axis; 1 and 2 as given."""
  if model_size != AUTO:
    return model_size
  needed = 2 if data == -1 else 2 * data
  return 2 if columns == 2 and num_devices >= needed else 1


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


class Layout:
  """The network and its batches laid out over a ('data', 'model') mesh, checked once.

  Column layers are split over 'model' on their leading column axis, fc8's kernel on its
  input rows (`param_specs`); batches are split over 'data' on their leading axis.
  Everything that depends on how the network sits on the mesh is here, so a new layout
  changes this class only: the mappers read the partition specs and the placement.

  Layouts are equal (and hash equal) when their mesh, model spec and mapper are; the
  batch sizes are only checked.
  """

  def __init__(self, mesh: jax.sharding.Mesh, spec: model.Spec, *,
               batch_sizes: Sequence[int] = (), mapper: str = 'shard_map'):
    """Raises a one-line ValueError, before anything compiles, for a layout that cannot
    hold this model, these global batch sizes or this mapper."""
    if tuple(mesh.axis_names) != AXES:
      raise ValueError(f'The mesh must have axes {AXES}, got {tuple(mesh.axis_names)}.')
    model_size = mesh.shape['model']
    if model_size not in (1, 2):
      raise ValueError(f"The mesh's model axis holds the columns and must be 1 or 2, got {model_size}.")
    if spec.columns % model_size:
      raise ValueError(f'A {spec.columns}-column model cannot be split over a model axis of '
                       f'{model_size}: set config.mesh.model=1.')
    self.mesh = mesh
    self.spec = spec
    for batch_size in batch_sizes:
      self.check_batch(batch_size)
    if mapper not in MAPPERS:
      raise ValueError(f"config.mesh.mapper must be one of {MAPPERS}, got {mapper!r}.")
    self.mapper = mapper
    self._mapper = _ShardMap(self) if mapper == 'shard_map' else pmap_mapper.Pmap(self)

  @classmethod
  def for_run(cls, run, *, batch_sizes: Sequence[int] | None = None, devices=None) -> Layout:
    """The run's layout (`run`: a `config.RunSpec`): run.mesh and run.model.

    batch_sizes: the global batch sizes the run feeds; by default run.batch_size and
    run.eval_batch_size.
    """
    if batch_sizes is None:
      batch_sizes = (run.batch_size, run.eval_batch_size)
    spec, mesh_spec = run.model, run.mesh
    num_devices = len(jax.devices() if devices is None else devices)
    model_size = model_axis(mesh_spec.model, num_devices, spec.columns, mesh_spec.data)
    if mesh_spec.model == AUTO:
      logging.info('config.mesh.model=-1 (what the devices allow): %d, %s (%d device%s, %d '
                   'column%s).', model_size, 'one column per device' if model_size == 2 else
                   'both columns on each device', num_devices, 's' * (num_devices > 1),
                   spec.columns, 's' * (spec.columns > 1))
    mesh = make_mesh(mesh_spec.data, model_size, devices)
    return cls(mesh, spec, batch_sizes=batch_sizes, mapper=mesh_spec.mapper)

  def _key(self):
    return self.mesh, self.spec, self.mapper

  def __eq__(self, other):
    return isinstance(other, Layout) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __repr__(self):
    return (f"Layout(data={self.data_size}, model={self.model_size}, mapper={self.mapper!r}, "
            f'columns={self.spec.columns})')

  # ------------------------------------------------------------------ the mesh

  @property
  def data_size(self) -> int:
    return self.mesh.shape['data']

  @property
  def model_size(self) -> int:
    return self.mesh.shape['model']

  @property
  def local_columns(self) -> int:
    """Columns each device computes."""
    return self.spec.columns // self.model_size

  def jit(self, fun, **kwargs):
    """`jax.jit` with the compiler options for this mesh's devices (`compiler.options`)."""
    return compiler.jit(fun, platform=self.mesh.devices.flat[0].platform, **kwargs)

  def check_batch(self, batch_size: int) -> None:
    """A global batch must split evenly over 'data'."""
    if batch_size % self.data_size:
      raise ValueError(f'The batch of {batch_size} is not divisible by the data axis of '
                       f'{self.data_size}: change the batch size or config.mesh.data.')

  # ------------------------------------------------------------------ shardings

  @functools.cached_property
  def param_specs(self) -> dict:
    """Column layers are split over 'model' on their leading column axis. fc8's kernel is
    split over 'model' on its input rows (each device holds the rows of its columns' fc7
    units) and its bias is replicated."""
    return {name: {'kernel': P('model'), 'bias': P() if name == 'fc8' else P('model')}
            for name in self.spec.layers}

  @property
  def batch_spec(self) -> P:
    """Images, labels and masks: the leading (example) axis split over 'data'."""
    return P('data')

  @functools.cached_property
  def param_shardings(self) -> dict:
    return jax.tree.map(lambda p: NamedSharding(self.mesh, p), self.param_specs)

  @functools.cached_property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, self.batch_spec)

  @functools.cached_property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def per_example(self, fn, *, replicated_args: int = 0):
    """`fn` on each device's own examples: its leading arguments are batches split over
    'data' (the devices of a 'model' group compute the same examples), and the last
    `replicated_args` are the same everywhere.

    For the per-example work around the network (Sec. 4.1's crops in the step): left to
    XLA's partitioner, it may be split over 'model' as well and gathered back, traffic
    between the columns' devices that the paper does not have.
    """
    def specs(n):
      return (self.batch_spec,) * (n - replicated_args) + (P(),) * replicated_args

    return lambda *args: jax.shard_map(fn, mesh=self.mesh, in_specs=specs(len(args)),
                                       out_specs=self.batch_spec)(*args)

  def shard_params(self, params):
    """Host or device params -> global arrays laid out by `param_shardings`."""
    return jax.device_put(params, self.param_shardings)

  def global_batch(self, local_batch: dict) -> dict:
    """This process's rows of a batch ({'images': ..., 'labels': ..., ...}, NumPy) -> global
    arrays split over 'data'; each process passes its own consecutive share."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local_batch.items()}

  # ------------------------------------------------------------------ inside the mapper

  def placement(self, local_batch: int, axes: Sequence[str] = AXES) -> model.Placement:
    """Where this device sits, for `model.forward`; call it inside the mapped function.

    axes: the mesh axes bound by the mapper there (shard_map binds both; pmap the one it
    maps). An axis not bound has one device, which computes every column or example.
    """
    where = {}
    if 'model' in axes:
      where['gather'] = lambda x: jax.lax.all_gather(x, 'model', axis=x.ndim - 1, tiled=True)
      where['sum_columns'] = lambda x: jax.lax.psum(x, 'model')
      where['first_column'] = jax.lax.axis_index('model') * self.local_columns
    if 'data' in axes:
      where['first_example'] = jax.lax.axis_index('data') * local_batch
    return model.Placement(**where)

  # ------------------------------------------------------------------ the sharded network

  def forward(self, *, train: bool = False, layer: str | None = None) -> Callable:
    """f(params, images, rng) -> logits (or `layer`'s activations), split over 'data'."""
    spec = self.spec

    def per_device(params, images, rng, place):
      return model.forward(params, images, spec, train=train, rng=rng, layer=layer,
                           placement=place(images.shape[0]))

    return self._mapper.forward(per_device, gathered=layer is not None)

  def loss(self, global_batch: int) -> Callable:
    """f(params, images, labels, rng) -> (mean cross-entropy, {'top1_error', 'top5_error'}).

    Means over the global batch: each device sums its examples, divided by the global
    batch size, and the sums are added over 'data'. Dropout is on (training).
    """
    spec = self.spec

    def per_device(params, images, labels, rng, place):
      return loss_sums(params, images, labels, rng, spec, place(images.shape[0]), global_batch)

    return self._mapper.loss(per_device, _loss_and_errors)

  def view_probs(self) -> Callable:
    """f(params, images [N, V, H, W, 3]) -> softmax averaged over the V views [N, classes].

    Sec. 4.1: the 10-view test averages the softmax outputs of the ten patches.
    """
    spec = self.spec

    def per_device(params, images, place):
      n, views = images.shape[:2]
      logits = model.forward(params, images.reshape((n * views,) + images.shape[2:]), spec,
                             placement=place(n * views))
      return jax.nn.softmax(logits, axis=-1).reshape(n, views, -1).mean(axis=1)

    return self._mapper.view_probs(per_device)


def _loss_and_errors(sums):
  return sums[0], {'top1_error': sums[1], 'top5_error': sums[2]}


class _ShardMap:
  """The default mapper: every layout as one `jax.shard_map` over the 2-D mesh."""

  def __init__(self, layout: Layout):
    self.layout = layout

  def forward(self, per_device, *, gathered: bool):
    layout = self.layout

    def mapped(params, images, rng):
      out = per_device(params, images, rng, layout.placement)
      # The logits are the same on every device of a 'model' group, and typed so: the
      # exchange before fc8 is a sum over 'model'. An intermediate layer's activations
      # come from a gather: the same values, typed as varying over 'model'; the mean
      # (exact for equal values) tells shard_map they are replicated.
      return jax.lax.pmean(out, 'model') if gathered else out

    return jax.shard_map(mapped, mesh=layout.mesh,
                         in_specs=(layout.param_specs, layout.batch_spec, P()),
                         out_specs=layout.batch_spec)

  def loss(self, per_device, finish):
    layout = self.layout

    def mapped(params, images, labels, rng):
      sums = per_device(params, images, labels, rng, layout.placement)
      return finish(jax.lax.psum(sums, 'data'))

    return jax.shard_map(mapped, mesh=layout.mesh,
                         in_specs=(layout.param_specs, layout.batch_spec, layout.batch_spec, P()),
                         out_specs=(P(), P()))

  def view_probs(self, per_device):
    layout = self.layout

    def mapped(params, images):
      return per_device(params, images, layout.placement)

    return jax.shard_map(mapped, mesh=layout.mesh, in_specs=(layout.param_specs, layout.batch_spec),
                         out_specs=layout.batch_spec)


def loss_sums(params, images, labels, rng, spec: model.Spec, placement: model.Placement,
              global_batch: int):
  """This device's [cross-entropy, top-1 errors, top-5 errors] summed over its examples,
  divided by the global batch size: its share of the global-batch means."""
  logits = model.forward(params, images, spec, train=True, rng=rng, placement=placement)
  ce, top1, top5 = losses.cross_entropy_and_errors(logits, labels)
  return jnp.stack([ce.sum(), top1.sum(), top5.sum()]) / global_batch


@functools.lru_cache(maxsize=32)
def _jitted_forward(layout: Layout, train: bool, layer: str | None):
  return jax.jit(layout.forward(train=train, layer=layer))


def apply(params, images, cfg, mesh, *, train: bool = False, rng=None, layer: str | None = None,
          mapper: str = 'shard_map'):
  """`alexnet_jax.apply` with the columns and the batch laid out over `mesh`."""
  spec = model.Spec.from_config(cfg)
  model.validate_images(images, spec)
  model.validate_params(params, spec)
  model.check_layer(layer, spec)
  layout = Layout(mesh, spec, batch_sizes=(images.shape[0],), mapper=mapper)
  if train and rng is None:
    raise ValueError('apply(train=True) needs rng=jax.random.key(...) for dropout.')
  rng = jax.random.key(0) if rng is None else rng
  return _jitted_forward(layout, train, layer)(
      layout.shard_params(params), jax.device_put(images, layout.batch_sharding),
      jax.device_put(rng, layout.replicated))

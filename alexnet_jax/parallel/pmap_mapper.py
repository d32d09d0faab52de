"""The pmap mapper (config.mesh.mapper='pmap'): the per-device code under `jax.pmap`.

It maps the one axis of the ('data', 'model') mesh that is larger than 1: the paper's
two columns on two devices (axis 'model', activations exchanged with `all_gather`) or
pure data parallelism (axis 'data'). On current JAX `jax.pmap` is `jit(shard_map)` over
one axis, and nesting two pmaps (data and model) fails with a mesh error, so a mesh
with both axes larger than 1 is a ValueError here.

It has the interface of the shard_map mapper (`forward`, `loss`, `view_probs`, each
taking the layout's per-device function) and takes everything it needs from the
`parallel.Layout`: which parameters are split over the mapped axis (their partition
specs), whether the batch is, and where each device sits (`Layout.placement`). It is
there to compare with pmap-era code, not for speed or 2-D layouts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P


class Pmap:
  """One `jax.pmap` over the layout's one mesh axis larger than 1."""

  def __init__(self, layout):
    data, model_size = layout.data_size, layout.model_size
    if data > 1 and model_size > 1:
      raise ValueError(f"mapper='pmap' maps one axis, but the mesh is {data}x{model_size} "
                       "(data x model): nested pmaps fail on current JAX. "
                       "Use config.mesh.mapper='shard_map', or a mesh with data=1 or model=1.")
    self.layout = layout
    self.axis = 'model' if model_size > 1 else 'data'
    self.size = layout.mesh.shape[self.axis]
    self.devices = list(layout.mesh.devices.flat)
    # A parameter whose leading axis the layout splits over the mapped axis is split the
    # same way here ([C, ...] -> [size, C/size, ...]: pmap takes the first axis away, and
    # forward wants a column axis); every other one is broadcast (None).
    self.param_axes = jax.tree.map(lambda p: 0 if len(p) and p[0] == self.axis else None,
                                   layout.param_specs, is_leaf=lambda x: isinstance(x, P))
    # The batch is split over the mapped axis if the layout splits it there ('data').
    self.batch_axis = 0 if layout.batch_spec[0] == self.axis else None
    self.place = functools.partial(layout.placement, axes=(self.axis,))

  # ---------------------------------------------------------------- operands and results

  def _operands(self, params):
    return jax.tree.map(lambda x, a: x if a is None else x.reshape((self.size, -1) + x.shape[1:]),
                        params, self.param_axes)

  def _split(self, x):
    """The batch split over 'data' ([N, ...] -> [size, N/size, ...]), else broadcast."""
    if self.batch_axis is None:
      return x
    return x.reshape((self.size, x.shape[0] // self.size) + x.shape[1:])

  def _examples(self, out):
    """Per-device outputs -> the batch's: over 'data' the devices hold consecutive slices
    of the batch; over 'model' every device holds the whole (gathered or summed) output."""
    return out[0] if self.batch_axis is None else out.reshape((-1,) + out.shape[2:])

  def _pmap(self, fn, in_axes):
    return jax.pmap(fn, axis_name=self.axis, in_axes=in_axes, devices=self.devices)

  # ---------------------------------------------------------------- the mapper interface

  def forward(self, per_device, *, gathered: bool):
    del gathered  # pmap's outputs carry no replication type.
    mapped = self._pmap(lambda params, images, rng: per_device(params, images, rng, self.place),
                        (self.param_axes, self.batch_axis, None))

    def forward(params, images, rng):
      images_type = jax.typeof(images)
      params, images, rng = _unsharded((params, images, rng), self.layout.mesh)
      with _outside_caller_mesh():
        out = self._examples(mapped(self._operands(params), self._split(images), rng))
      return _like_batch(out, images_type)

    return forward

  def view_probs(self, per_device):
    mapped = self._pmap(lambda params, images: per_device(params, images, self.place),
                        (self.param_axes, self.batch_axis))

    def view_probs(params, images):
      images_type = jax.typeof(images)
      params, images = _unsharded((params, images), self.layout.mesh)
      with _outside_caller_mesh():
        out = self._examples(mapped(self._operands(params), self._split(images)))
      return _like_batch(out, images_type)

    return view_probs

  def loss(self, per_device, finish):
    """The loss under pmap, differentiated inside the pmap (the classic pmap pattern).

    JAX 0.10 cannot transpose a pmap inside a jit whose values carry the ('data', 'model')
    mesh's explicit shardings (cotangent types differ in sharding only), so `jax.grad`
    taken outside sees this function through a custom VJP whose backward pass scales the
    gradients computed inside the pmap. Per device the gradient is of its share of the
    loss: its examples' sum / global batch over 'data'; over 'model', where every device
    computes the whole loss, 1/size of it (all_gather's transpose adds the shares of the
    columns' devices). Shares of broadcast (replicated) parameters are added outside.
    """
    share = 1.0 if self.batch_axis is not None else 1.0 / self.size

    def device_grads(params, images, labels, rng):
      def loss_share(p):
        sums = share * per_device(p, images, labels, rng, self.place)
        return sums[0], sums

      (_, sums), grads = jax.value_and_grad(loss_share, has_aux=True)(params)
      return grads, sums

    mapped = self._pmap(device_grads, (self.param_axes, self.batch_axis, self.batch_axis, None))

    def run(params, images, labels, rng):
      types = jax.tree.map(jax.typeof, params)
      replicated_type = jax.typeof(rng)  # The caller's replicated sharding (or none).
      params, images, labels, rng = _unsharded((params, images, labels, rng), self.layout.mesh)
      with _outside_caller_mesh():
        grads, sums = mapped(self._operands(params), self._split(images), self._split(labels),
                             rng)
        # Split leaves come back with the device axis first; broadcast ones as one share
        # per device, added.
        grads = jax.tree.map(lambda g, a, t: g.sum(axis=0) if a is None else g.reshape(t.shape),
                             grads, self.param_axes, types, is_leaf=lambda x: x is None)
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
      return finish(mean_sums(params, images, labels, rng))

    return loss


def _outside_caller_mesh():
  """Outside the caller's jax.set_mesh: pmap brings its own one-axis mesh."""
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ()))


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


def _like_batch(x, images_type):
  """Per-example results back in the caller's batch sharding (its leading axis's)."""
  sharding = getattr(images_type, 'sharding', None)
  if sharding is None or sharding.mesh.empty:
    return x
  lead = sharding.spec[0] if len(sharding.spec) else None
  return jax.sharding.reshard(x, NamedSharding(sharding.mesh, P(lead)))

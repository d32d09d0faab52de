"""parallel.Layout on the four meshes (data x model) = (1,1), (1,2), (2,1), (2,2).

What each device holds is read back shard by shard and compared with NumPy slices of
the host arrays; the placement is read out of a shard_map on every device and compared
with hand-computed indices. tests/conftest.py fakes 4 CPU devices before JAX starts.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alexnet_jax import model, parallel
from alexnet_jax.config import RunSpec

MESHES = [(1, 1), (1, 2), (2, 1), (2, 2)]


def _coordinates(mesh, device):
  """(data index, model index) of `device` in `mesh`."""
  (coords,) = np.argwhere(mesh.devices == device)
  return tuple(int(c) for c in coords)


def _config(data, model_size, **overrides):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (32, 32)
  config.model.num_classes = 10
  config.mesh.data, config.mesh.model = data, model_size
  config.batch_size = config.eval_batch_size = 4
  config.update_from_flattened_dict(overrides)  # Dotted names: {'model.init': 'he'}.
  return config


@pytest.mark.parametrize('shape', MESHES)
def test_for_run_builds_the_mesh_and_equal_layouts(shape):
  data, model_size = shape
  layout = parallel.Layout.for_run(RunSpec.from_config(_config(data, model_size)),
                                   devices=jax.devices()[:data * model_size])
  assert dict(layout.mesh.shape) == {'data': data, 'model': model_size}
  assert tuple(layout.mesh.axis_names) == ('data', 'model')
  assert (layout.data_size, layout.model_size) == shape
  assert layout.local_columns == 2 // model_size
  assert layout.mapper == 'shard_map'
  same = parallel.Layout.for_run(RunSpec.from_config(_config(data, model_size)),
                                 devices=jax.devices()[:data * model_size])
  assert same == layout and hash(same) == hash(layout)  # Usable as a jit cache key.
  if data == 1:  # pmap expresses this layout: a different mapper is a different layout.
    assert parallel.Layout(layout.mesh, layout.spec, mapper='pmap') != layout


def test_data_minus_one_takes_every_device_the_model_axis_leaves():
  for model_size, data in ((1, 4), (2, 2)):
    layout = parallel.Layout.for_run(RunSpec.from_config(_config(-1, model_size)))
    assert (layout.data_size, layout.model_size) == (data, model_size)


@pytest.mark.parametrize('shape', MESHES)
def test_column_layers_and_fc8_rows_split_over_model(case, make_mesh, shape):
  cfg, params, _, _ = case
  layout = parallel.Layout(make_mesh(*shape), model.Spec.from_config(cfg))
  for name in model.LAYERS:
    for leaf in ('kernel', 'bias'):
      expected = P() if (name, leaf) == ('fc8', 'bias') else P('model')
      assert layout.param_specs[name][leaf] == expected, (name, leaf)
      assert layout.param_shardings[name][leaf].spec == expected
      assert layout.param_shardings[name][leaf].mesh == layout.mesh
  sharded = layout.shard_params(params)
  data, model_size = shape
  for name in model.LAYERS:
    for leaf in ('kernel', 'bias'):
      host = np.asarray(params[name][leaf])
      array = sharded[name][leaf]
      np.testing.assert_array_equal(np.asarray(array), host)  # The whole, unchanged.
      shards = array.addressable_shards
      assert len(shards) == data * model_size
      for shard in shards:
        _, m = _coordinates(layout.mesh, shard.device)
        if (name, leaf) == ('fc8', 'bias') or model_size == 1:
          want = host  # Replicated: every device holds all of it.
        elif name == 'fc8':
          rows = host.shape[0] // model_size  # Column m's fc7 units' rows of the kernel.
          want = host[m * rows:(m + 1) * rows]
        else:
          want = host[m:m + 1]  # Column m's slice of the leading column axis.
        np.testing.assert_array_equal(np.asarray(shard.data), want,
                                      err_msg=f'{shape} {name} {leaf} {shard.device}')


@pytest.mark.parametrize('shape', MESHES)
def test_global_batch_splits_over_data_and_round_trips(case, make_mesh, shape):
  cfg, _, _, _ = case
  layout = parallel.Layout(make_mesh(*shape), model.Spec.from_config(cfg), batch_sizes=(8,))
  rng = np.random.default_rng(0)
  batch = {'images': rng.normal(size=(8, 5, 5, 3)).astype(np.float32),
           'labels': rng.integers(0, 10, size=8).astype(np.int32),
           'mask': rng.random(8) < 0.5}
  arrays = layout.global_batch(batch)
  assert set(arrays) == set(batch)
  data, _ = shape
  rows = 8 // data
  for key, host in batch.items():
    array = arrays[key]
    assert array.sharding.spec == P('data') and array.dtype == host.dtype
    np.testing.assert_array_equal(np.asarray(array), host)  # Round trip, exactly.
    for shard in array.addressable_shards:
      d, _ = _coordinates(layout.mesh, shard.device)
      # Devices of one 'model' group hold the same consecutive rows.
      np.testing.assert_array_equal(np.asarray(shard.data), host[d * rows:(d + 1) * rows],
                                    err_msg=f'{shape} {key} {shard.device}')
  assert layout.batch_sharding.spec == P('data')
  assert layout.replicated.spec == P()


@pytest.mark.parametrize('shape', MESHES)
def test_placement_on_every_device(case, make_mesh, shape):
  cfg, _, _, _ = case
  layout = parallel.Layout(make_mesh(*shape), model.Spec.from_config(cfg))
  data, model_size = shape
  batch = 8

  def per_device(x):
    place = layout.placement(x.shape[0])
    # This device's columns, as activations [1, local_columns] holding their indices.
    own = (place.first_column + jnp.arange(layout.local_columns))[None].astype(jnp.float32)
    indices = jnp.stack([jnp.asarray(place.first_column), jnp.asarray(place.first_example)])
    return indices[None], place.gather(own)

  indices, gathered = jax.jit(jax.shard_map(
      per_device, mesh=layout.mesh, in_specs=P('data'),
      out_specs=(P(parallel.AXES), P(parallel.AXES))))(
          jax.device_put(jnp.zeros((batch, 1)), layout.batch_sharding))
  indices, gathered = np.asarray(indices), np.asarray(gathered)
  assert indices.shape == (data * model_size, 2)
  for d in range(data):
    for m in range(model_size):
      row = d * model_size + m  # P(('data', 'model')): data-major.
      # Column m holds columns m*2/model_size..; data index d starts at example d*8/data.
      assert indices[row].tolist() == [m * (2 // model_size), d * (batch // data)], (shape, d, m)
      # gather gives every device both columns, column 0 first.
      assert gathered[row].tolist() == [0.0, 1.0], (shape, d, m)


def _message(fn):
  with pytest.raises(ValueError) as info:
    fn()
  message = str(info.value)
  assert '\n' not in message, message  # One line.
  return message


def test_bad_layouts_are_one_line_errors(make_mesh, small_model_config):
  spec = model.Spec.from_config(small_model_config())
  devices = jax.devices()[:4]
  # config.mesh is checked where the config is parsed (MeshSpec), the mesh where it is made.
  assert _message(lambda: parallel.Layout.for_run(RunSpec.from_config(_config(1, 3)))) == (
      'The model axis holds the columns and must be 1 or 2 (or -1: what the devices allow), '
      'got 3 (config.mesh.model).')
  assert _message(lambda: parallel.make_mesh(1, 3, devices=devices)) == (
      'The model axis holds the columns and must be 1 or 2, got 3 (config.mesh.model).')
  assert _message(lambda: parallel.Layout.for_run(RunSpec.from_config(_config(4, 2)),
                                                  devices=devices)) == (
      'A 4x2 (data x model) mesh needs 8 devices, 4 are available: change config.mesh.')
  assert _message(lambda: parallel.Layout(jax.make_mesh((1, 4), parallel.AXES, devices=devices),
                                          spec)) == (
      "The mesh's model axis holds the columns and must be 1 or 2, got 4.")
  assert _message(lambda: parallel.Layout(jax.make_mesh((2, 2), ('x', 'y'), devices=devices),
                                          spec)) == (
      "The mesh must have axes ('data', 'model'), got ('x', 'y').")
  one_column = model.Spec.from_config(small_model_config(columns=1))
  assert _message(lambda: parallel.Layout(make_mesh(1, 2), one_column)) == (
      'A 1-column model cannot be split over a model axis of 2: set config.mesh.model=1.')
  assert _message(lambda: parallel.Layout.for_run(RunSpec.from_config(
      _config(2, 1, batch_size=3)), devices=devices)) == (
      'The batch of 3 is not divisible by the data axis of 2: change the batch size or '
      'config.mesh.data.')
  assert _message(lambda: parallel.Layout.for_run(RunSpec.from_config(
      _config(2, 1, eval_batch_size=5)), devices=devices)) == (
      'The batch of 5 is not divisible by the data axis of 2: change the batch size or '
      'config.mesh.data.')
  # Only the batch sizes the run feeds are checked (--mode=eval feeds no training batch).
  layout = parallel.Layout.for_run(RunSpec.from_config(_config(2, 1, batch_size=3)),
                                   batch_sizes=(4,), devices=devices)
  assert _message(lambda: layout.check_batch(3)).startswith('The batch of 3 is not divisible')
  assert _message(lambda: parallel.Layout.for_run(RunSpec.from_config(
      _config(1, 1, **{'mesh.mapper': 'xmap'})), devices=devices)) == (
      "config.mesh.mapper must be one of ('shard_map', 'pmap'), got 'xmap'.")
  assert re.fullmatch(
      r"mapper='pmap' maps one axis, but the mesh is 2x2 \(data x model\): nested pmaps fail on "
      r"current JAX\. Use config\.mesh\.mapper='shard_map', or a mesh with data=1 or model=1\.",
      _message(lambda: parallel.Layout.for_run(
          RunSpec.from_config(_config(2, 2, **{'mesh.mapper': 'pmap'})), devices=devices)))

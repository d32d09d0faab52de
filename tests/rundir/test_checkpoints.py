"""alexnet_jax.rundir.checkpoints: round trips, retention, host loading, re-sharding, corruption."""

import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.rundir import checkpoints
from alexnet_jax import optim

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_params(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {'conv1': {'kernel': (3, 3, 2, 4), 'bias': (4,)},
            'fc8': {'kernel': (6, 4), 'bias': (4,)}}
  return {layer: {name: jnp.asarray(rng.normal(size=shape), jnp.float32)
                  for name, shape in leaves.items()}
          for layer, leaves in shapes.items()}


def trained_state(step=3):
  """params + paper_sgd state after a few updates and one plateau decay (non-default)."""
  params = small_params()
  tx = optim.paper_sgd(optax.piecewise_constant_schedule(0.1, {2: 0.1}), 0.9, 5e-4)
  opt_state = tx.init(params)
  for i in range(step):
    grads = jax.tree.map(lambda p, i=i: jnp.cos(p + i), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  for error in (0.5, 0.6, 0.7):
    opt_state, _ = optim.plateau_update(opt_state, error, patience=2, max_decays=3)
  return {'params': params, 'opt_state': opt_state, 'rng': jax.random.key(7),
          'step': jnp.asarray(step, jnp.int32)}


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if checkpoints._is_key(x):  # pylint: disable=protected-access
      assert x.dtype == y.dtype
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact(tmp_path):
  state = trained_state()
  plateau = optim.plateau_state(state['opt_state'])
  assert float(plateau.scale) == pytest.approx(0.1) and int(plateau.num_decays) == 1
  meta = {'epoch': 2, 'config': {'optim': {'schedule': 'plateau'}}, 'top1_error': 0.25}
  ckpt = checkpoints.Checkpoints(tmp_path, keep=2, every=1)
  assert ckpt.latest_step() is None
  assert ckpt.save(3, state, meta, force=True)
  assert ckpt.latest_step() == 3
  restored, restored_meta = ckpt.restore(3, checkpoints.abstract_like(state))
  assert_trees_equal(restored, state)
  assert restored_meta == meta
  # The restored key is a typed key again and draws the same numbers.
  np.testing.assert_array_equal(jax.random.normal(restored['rng'], (3,)),
                                jax.random.normal(state['rng'], (3,)))
  # The plateau state survives as a PlateauState the optimizer can use.
  assert optim.plateau_state(restored['opt_state']).scale == plateau.scale
  ckpt.close()


def test_keeps_the_last_k_and_respects_the_interval(tmp_path):
  state = trained_state(step=1)
  ckpt = checkpoints.Checkpoints(tmp_path, keep=2, every=10)
  for step in (0, 5, 10, 20, 30):
    ckpt.save(step, state, {'step': step})
  ckpt.save(33, state, {'step': 33}, force=True)  # Off the interval, forced.
  assert ckpt.all_steps() == [30, 33]
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['30', '33']
  _, meta = ckpt.restore(33, checkpoints.abstract_like(state))
  assert meta == {'step': 33}
  ckpt.close()


def test_load_params_from_workdir_and_step_dir(tmp_path):
  state = trained_state()
  with checkpoints.Checkpoints(tmp_path, keep=3, every=1) as ckpt:
    ckpt.save(1, trained_state(step=1), {}, force=True)
    ckpt.save(3, state, {}, force=True)
  want = jax.tree.map(np.asarray, state['params'])
  for path in (tmp_path, tmp_path / 'checkpoints', str(tmp_path / 'checkpoints' / '3')):
    got = checkpoints.load_params(path)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert isinstance(x, np.ndarray)
      np.testing.assert_array_equal(x, y)
  older = checkpoints.load_params(tmp_path / 'checkpoints' / '1')
  np.testing.assert_array_equal(older['fc8']['bias'], trained_state(1)['params']['fc8']['bias'])
  # In a fresh interpreter (this one has TensorFlow from conftest): loading needs none.
  code = ('import sys, alexnet_jax; p = alexnet_jax.load_params(sys.argv[1]); '
          "print(float(p['fc8']['bias'][0]), 'tensorflow' in sys.modules)")
  done = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True,
                        text=True, timeout=300, cwd=REPO)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == [repr(float(want['fc8']['bias'][0])), 'False']


def test_load_params_missing_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='pass a training workdir'):
    checkpoints.load_params(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    checkpoints.load_params(tmp_path)


def shard(tree, mesh, spec_for):
  return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec_for(x))), tree)


def last_axis_on_model(x):
  return P(*([None] * (x.ndim - 1) + ['model'])) if x.ndim else P()


def test_resharding_between_two_devices_and_one(tmp_path):
  assert jax.device_count() >= 2, 'tests/conftest.py should give 4 CPU devices'
  two = Mesh(np.array(jax.devices()[:2]), ('model',))
  one = Mesh(np.array(jax.devices()[1:2]), ('model',))
  state = trained_state()
  sharded = shard(state, two, last_axis_on_model)
  assert len(sharded['params']['fc8']['kernel'].addressable_shards) == 2

  # Two devices -> one device.
  with checkpoints.Checkpoints(tmp_path / 'a', keep=1, every=1) as ckpt:
    ckpt.save(3, sharded, {}, force=True)
    target = checkpoints.abstract_like(shard(state, one, lambda x: P()))
    restored, _ = ckpt.restore(3, target)
  assert_trees_equal(restored, state)
  assert restored['params']['fc8']['kernel'].sharding == NamedSharding(one, P())
  np.testing.assert_array_equal(checkpoints.load_params(tmp_path / 'a')['fc8']['kernel'],
                                state['params']['fc8']['kernel'])

  # One device -> two devices.
  with checkpoints.Checkpoints(tmp_path / 'b', keep=1, every=1) as ckpt:
    ckpt.save(3, shard(state, one, lambda x: P()), {}, force=True)
    restored, _ = ckpt.restore(3, checkpoints.abstract_like(sharded))
  assert_trees_equal(restored, state)
  kernel = restored['params']['fc8']['kernel']
  assert kernel.sharding == NamedSharding(two, P(None, 'model'))
  assert [s.data.shape for s in kernel.addressable_shards] == [(6, 2), (6, 2)]


def test_load_params_of_a_sharded_run_logs_no_orbax_warning(tmp_path, caplog):
  # Saved as training saves it: params split over a 2x2 mesh of the 4 fake devices.
  assert jax.device_count() >= 4, 'tests/conftest.py should give 4 CPU devices'
  mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ('data', 'model'))
  state = trained_state()
  sharded = shard(state, mesh, last_axis_on_model)
  assert len(sharded['params']['fc8']['kernel'].sharding.device_set) == 4
  with checkpoints.Checkpoints(tmp_path, keep=2, every=1) as ckpt:
    ckpt.save(3, sharded, {'epoch': 1}, force=True)
  with caplog.at_level(logging.DEBUG):
    for path in (tmp_path, tmp_path / 'checkpoints' / '3'):
      got = checkpoints.load_params(path)
      assert jax.tree.structure(got) == jax.tree.structure(state['params'])
      for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(state['params'])):
        assert isinstance(x, np.ndarray)  # Whole, on the host: no mesh needed.
        np.testing.assert_array_equal(x, np.asarray(y))
  messages = [r.getMessage() for r in caplog.records]
  assert messages, 'orbax logs its reads at INFO; nothing captured means nothing was checked'
  assert not [m for m in messages if 'Metadata file does not exist' in m]
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_corrupt_checkpoint_gives_one_line_error_naming_the_file(tmp_path, capfd):
  state = trained_state()
  with checkpoints.Checkpoints(tmp_path, keep=2, every=1) as ckpt:
    ckpt.save(3, state, {}, force=True)
  # Damage the array store of step 3 (as a disk error or a truncated copy would).
  state_dir = tmp_path / 'checkpoints' / '3' / 'state'
  damaged = sorted(f for f in state_dir.rglob('*') if f.is_file() and f.name != '_METADATA')
  for f in damaged:
    f.write_bytes(b'garbage')
  ckpt = checkpoints.Checkpoints(tmp_path, keep=2, every=1)
  assert ckpt.latest_step() == 3
  with pytest.raises(checkpoints.CheckpointError) as info:
    ckpt.restore(3, checkpoints.abstract_like(state))
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert '\n' not in message and str(tmp_path / 'checkpoints' / '3') in message
  assert any(str(f) in message for f in damaged), message  # The file that cannot be read.
  assert 'delete' not in message  # Never advise deleting what may be the only copy.
  with pytest.raises(checkpoints.CheckpointError):
    checkpoints.load_params(tmp_path)
  ckpt.close()
  # Nothing was printed on the way (orbax's asyncio callbacks once printed 'Event loop is
  # closed' tracebacks after a failed read).
  assert 'Traceback' not in capfd.readouterr().err


@pytest.mark.parametrize('damage', ['missing _METADATA', 'truncated data file'])
def test_restore_latest_falls_back_and_keeps_the_damaged_step(tmp_path, caplog, damage):
  one, three = trained_state(step=1), trained_state(step=3)
  with checkpoints.Checkpoints(tmp_path, keep=3, every=1) as ckpt:
    ckpt.save(1, one, {'step': 1}, force=True)
    ckpt.save(3, three, {'step': 3}, force=True)
  state_dir = tmp_path / 'checkpoints' / '3' / 'state'
  if damage == 'missing _METADATA':
    bad = state_dir / '_METADATA'
    bad.unlink()
  else:
    bad = max((state_dir / 'd').iterdir(), key=lambda f: f.stat().st_size)  # OCDBT's data.
    bad.write_bytes(bad.read_bytes()[:bad.stat().st_size // 2])
  with checkpoints.Checkpoints(tmp_path, keep=3, every=1) as ckpt, caplog.at_level(logging.WARNING):
    state, meta, step = ckpt.restore_latest(checkpoints.abstract_like(three))
    assert (step, meta) == (1, {'step': 1})
    assert_trees_equal(state, one)
    assert ckpt.all_steps() == [1]
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and 'step 3' in warnings[0]
  assert bad.name in warnings[0] and '\n' not in warnings[0]
  # Kept, whole, beside the checkpoints: moved, not deleted.
  aside = tmp_path / 'checkpoints.damaged' / '3'
  assert sorted(p.relative_to(aside) for p in aside.rglob('*')) != []
  assert not (tmp_path / 'checkpoints' / '3').exists()


def test_restore_latest_puts_every_step_back_when_none_restores(tmp_path):
  with checkpoints.Checkpoints(tmp_path, keep=3, every=1) as ckpt:
    ckpt.save(1, trained_state(step=1), {}, force=True)
  other = {'params': small_params(), 'step': jnp.asarray(0)}  # Another run's structure.
  with checkpoints.Checkpoints(tmp_path, keep=3, every=1) as ckpt:
    with pytest.raises(checkpoints.CheckpointError, match='resume with the config that wrote it'):
      ckpt.restore_latest(checkpoints.abstract_like(other))
    assert ckpt.all_steps() == [1]
  assert not (tmp_path / 'checkpoints.damaged' / '1').exists()


def test_a_save_failed_on_another_process_is_one_line_naming_the_step(tmp_path):
  # What every other process raises when the processes agree that one's save failed.
  with checkpoints.Checkpoints(tmp_path, keep=2, every=1) as ckpt:
    ckpt.save(3, trained_state(), {})
    ckpt.wait_until_finished()
    assert not ckpt.failed()
    ckpt.raise_failure()  # Nothing failed here, nor elsewhere: nothing is raised.
    with pytest.raises(checkpoints.CheckpointSaveError) as info:
      ckpt.raise_failure(elsewhere=True)
  message = str(info.value)
  assert message.startswith(f'saving step 3 to {tmp_path / "checkpoints" / "3"} failed: it '
                            'failed on another process')
  assert '\n' not in message and 'resume from step 3' in message

"""Orbax checkpoints of a training run, and the host-side loader for notebooks.

Layout on disk (one orbax CheckpointManager under `<workdir>/checkpoints`):

  <workdir>/checkpoints/<step>/state/   the training state, an orbax PyTree (OCDBT):
      {'params':    {'conv1': {'kernel', 'bias'}, ..., 'fc8': {...}},
       'opt_state': the optax state of alexnet_jax.optim.paper_sgd: the momentum
                    velocity, the update count, and the plateau stage's PlateauState
                    (scale, best error, evaluations without improvement, decays),
       'rng':       uint32 key data (jax.random.key_data) of the run's key,
       'step':      int32 scalar, the number of updates done}
  <workdir>/checkpoints/<step>/meta/    a small JSON dict that train.py writes: step, epoch,
                                        the config (as JSON text) and the devices.

Typed PRNG keys cannot be written by orbax, so `Checkpoints.save` writes any typed key
array it meets as its key data, and `Checkpoints.restore` wraps it back into a key
wherever the abstract state has a key dtype (default PRNG implementation). Arrays may be
sharded over a mesh when saved and are restored with the shardings of the abstract
state, so a run can resume on a different layout. Orbax writes into a temporary
directory and renames it when complete, so an interrupted save leaves the previous
checkpoints as they were.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE = 'state'
META = 'meta'


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read (corrupt, partial, or another model's)."""


def _one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text[:200]}'


def _is_key(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree):
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_key_data(x):
  if not _is_key(x):
    return x
  data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
  # The key data has the key's shape plus trailing implementation dims, which the
  # key's sharding leaves unsharded.
  return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, 'sharding', None))


def _wrap_keys(abstract, restored):
  def wrap(a, r):
    if not _is_key(a):
      return r
    key = jax.random.wrap_key_data(r)
    if key.dtype != a.dtype:
      raise CheckpointError(f'restored key has dtype {key.dtype}, expected {a.dtype}; '
                            'restore with the PRNG implementation the run was saved with.')
    return key
  return jax.tree.map(wrap, abstract, restored)


def abstract_like(tree) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of jax arrays, as `restore` wants."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpoints:
  """The checkpoints of one run: save every `every` steps, keep the last `keep`.

  All processes of a multi-host run construct it and call `save` / `restore` together.
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, every: int = 1000):
    if keep < 1 or every < 1:
      raise ValueError(f'keep and every must be >= 1, got keep={keep}, every={every}; '
                       'set --config.keep_checkpoints / --config.checkpoint_every_steps.')
    self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f'{self.directory} exists and is not a directory; '
                            'delete it or point --workdir elsewhere.')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=every, create=True)
    try:
      self._manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={STATE: ocp.StandardCheckpointHandler(),
                         META: ocp.JsonCheckpointHandler()})
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(
          f'cannot open checkpoint directory {self.directory} ({_one_line(e)}); '
          'delete it or point --workdir elsewhere.') from e

  def save(self, step: int, state: Any, meta: Mapping[str, Any], *,
           force: bool = False) -> bool:
    """Saves `state` (pytree of arrays) and `meta` (JSON dict) if `step` is due, or if force.

    The device-to-host copy happens before returning, so the caller may donate `state`
    right after; the write to disk goes on in the background unless `force`, which waits
    for it (end of run, SIGTERM). Returns whether a checkpoint was started.
    """
    args = ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(_keys_to_data(state)),
        META: ocp.args.JsonSave(dict(meta)),
    })
    saved = self._manager.save(int(step), args=args, force=force)
    if force:
      self._manager.wait_until_finished()
    return saved

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores (state, meta) at `step`; arrays get the shardings in `abstract_state`.

    abstract_state: a pytree of jax.ShapeDtypeStruct with .sharding, e.g.
    `jax.eval_shape(init)` with the run's shardings attached (see `abstract_like`).
    Typed key leaves are restored as keys.
    """
    target = jax.tree.map(_abstract_key_data, abstract_state)
    step_dir = self.directory / str(step)
    try:
      restored = self._manager.restore(int(step), args=ocp.args.Composite(**{
          STATE: ocp.args.StandardRestore(target),
          META: ocp.args.JsonRestore(),
      }))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(
          f'cannot restore checkpoint {step_dir} ({_one_line(e)}); delete that directory, '
          'point --workdir elsewhere, or use the config that wrote it.') from e
    return _wrap_keys(abstract_state, restored[STATE]), dict(restored[META])

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> 'Checkpoints':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _steps_in(directory: pathlib.Path) -> list[int]:
  # Orbax's unfinished saves are '<step>.orbax-checkpoint-tmp-<n>'; int() skips them.
  steps = []
  for child in directory.iterdir():
    if child.is_dir() and child.name.isdigit():
      steps.append(int(child.name))
  return sorted(steps)


def _step_dir(path: pathlib.Path) -> pathlib.Path:
  """The step directory for a workdir, its 'checkpoints' dir, or a step dir itself."""
  if (path / STATE).is_dir():
    return path
  directory = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
  steps = _steps_in(directory)
  if not steps:
    raise FileNotFoundError(
        f'no checkpoint in {path}; pass a training workdir, its checkpoints/ directory, '
        'or one checkpoints/<step> directory.')
  return directory / str(steps[-1])


def load_params(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """The params of the latest checkpoint under `path` as nested numpy arrays, on the host.

  path: a training workdir, its checkpoints/ directory, or one checkpoints/<step>
  directory (named by its step, as orbax finds it). Needs no mesh (arrays saved sharded
  come back whole) and no TensorFlow.
  """
  path = pathlib.Path(path).expanduser().absolute()
  if not path.is_dir():
    raise FileNotFoundError(
        f'{path} is not a directory; pass a training workdir, its checkpoints/ directory, '
        'or one checkpoints/<step> directory.')
  step_dir = _step_dir(path)
  state_dir = step_dir / STATE
  if not step_dir.name.isdigit():
    raise FileNotFoundError(f'{step_dir} is not named by its step number, as orbax reads it; '
                            'pass the checkpoints/<step> directory the run wrote.')
  # The manager training writes with, on the step's parent: it reads the step's own metadata
  # (a checkpointer on state/ alone looks for it there and warns). Both items are registered
  # so that orbax does not warn about `meta`; create=False writes nothing. `state` is read
  # with the PyTree handler (the Standard handler training saves with is a thin wrapper
  # over it, same files) because its PyTreeRestore can read the params alone
  # (partial_restore), not the optimizer state beside them.
  try:
    manager = ocp.CheckpointManager(
        step_dir.parent, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler(), META: ocp.JsonCheckpointHandler()})
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'cannot open {step_dir.parent} ({_one_line(e)}); pass a training '
                          'workdir or its checkpoints/ directory.') from e
  try:
    step = int(step_dir.name)
    tree = manager.item_metadata(step)[STATE].tree
    target = {'params': tree['params']}
    # Host numpy arrays: no mesh, whatever the layout the run saved them with.
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)}))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
        f'cannot read params from {state_dir} ({_one_line(e)}); delete that step '
        'directory or pass another one.') from e
  finally:
    manager.close()
  return restored[STATE]['params']


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The meta dict (step, epoch, config as JSON text, ...) of the latest checkpoint under
  `path` (the places `load_params` takes), on the host; {} if that checkpoint has none."""
  path = pathlib.Path(path).expanduser().absolute()
  if not path.is_dir():
    raise FileNotFoundError(
        f'{path} is not a directory; pass a training workdir, its checkpoints/ directory, '
        'or one checkpoints/<step> directory.')
  step_dir = _step_dir(path)
  if not (step_dir / META).is_dir():
    return {}
  try:
    manager = ocp.CheckpointManager(
        step_dir.parent, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler(), META: ocp.JsonCheckpointHandler()})
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'cannot open {step_dir.parent} ({_one_line(e)}); pass a training '
                          'workdir or its checkpoints/ directory.') from e
  try:
    restored = manager.restore(int(step_dir.name), args=ocp.args.Composite(**{
        META: ocp.args.JsonRestore()}))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'cannot read {step_dir / META} ({_one_line(e)}); delete that step '
                          'directory or pass another one.') from e
  finally:
    manager.close()
  return dict(restored[META] or {})

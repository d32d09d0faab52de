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

Faults (docs/training.md, "What a run directory survives"): `restore_latest` checks each step's
files before orbax reads them (a missing or truncated file is named) and falls back to
the newest step that restores, moving a damaged one aside to <workdir>/checkpoints.damaged/
(never deleting it); `failed` and `raise_failure` turn a failed background save into one
`CheckpointSaveError` at the next step; `remove_unfinished_saves` clears the temporary
directories that failed saves leave.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from typing import Any, Mapping

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from absl import logging

from alexnet_jax import storage
from alexnet_jax.rundir import logs
from alexnet_jax.rundir.files import CHECKPOINTS, RunDir
from alexnet_jax.parallel import distributed

STATE = 'state'
META = 'meta'
UNFINISHED = '.orbax-checkpoint-tmp'  # Orbax's name for a save not yet complete (local disks).
# On an object store (no rename) orbax writes a step in place and marks it complete last.
COMMIT_SUCCESS = 'commit_success.txt'
# The files orbax needs to read a step; their absence is named rather than left to a
# pytree or JSON error from deep inside orbax.
REQUIRED = ('_CHECKPOINT_METADATA', f'{STATE}/_METADATA', f'{STATE}/manifest.ocdbt',
            f'{META}/metadata')


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read (corrupt, partial, or another model's)."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions); the earlier ones are kept."""




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
    self.run = RunDir(workdir)
    self.directory = self.run.checkpoints
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f'{self.directory} exists and is not a directory; '
                            'move it aside or point --workdir elsewhere.')
    # Orbax's own policies where they fit (max_to_keep, the save interval). Not orbax's
    # pre-emption check (`reached_preemption`): it hears only the coordination service's
    # notice, which a single process or a SLURM job never gets, so SIGTERM is caught by
    # train._StopFlags instead; nor `cleanup_tmp_directories`, which removes unfinished
    # saves silently (remove_unfinished_saves logs each, with its size).
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
          'move it aside or point --workdir elsewhere.') from e
    logs.ORBAX_ECHOES.attach()
    self._pending = None  # (step, bytes) of the save still being written in the background.
    self._last_step = None  # The step of the last save started.
    self._failure = None  # This process's CheckpointSaveError, once a save has failed.
    self._raised = False  # A save error was raised: close() then waits for nothing.
    self._closed = False

  def save(self, step: int, state: Any, meta: Mapping[str, Any], *,
           force: bool = False) -> bool:
    """Saves `state` (pytree of arrays) and `meta` (JSON dict) if `step` is due, or if force.

    The device-to-host copy happens before returning, so the caller may donate `state`
    right after; the write to disk goes on in the background unless `force`, which waits
    for it (end of run, SIGTERM). Returns whether a checkpoint was started.
    """
    data = _keys_to_data(state)
    args = ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(data),
        META: ocp.args.JsonSave(dict(meta)),
    })
    self.wait_until_finished()  # Orbax waits for the previous save: its error is ours first.
    nbytes = sum(getattr(x, 'nbytes', 0) for x in jax.tree.leaves(data))
    free = _free_bytes(self.directory)
    short = free is not None and free < nbytes
    if jax.process_count() > 1:
      # Orbax's save is collective: a process refusing alone would leave the others waiting
      # for it in orbax's barriers. All refuse if any lacks the room.
      shorts = np.flatnonzero(_all_processes([short])[:, 0])
      if len(shorts) and not short:
        self._raised = True
        raise CheckpointSaveError(self._save_message(
            int(step), f'{os.strerror(errno.ENOSPC)} on process(es) {list(shorts)}', nbytes))
    if short:
      # Refused before any write: a save that fails part way fails in orbax's threads.
      self._raised = True
      raise CheckpointSaveError(self._save_message(int(step), os.strerror(errno.ENOSPC), nbytes,
                                                   free=free))
    try:
      saved = self._manager.save(int(step), args=args, force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._raised = True
      raise self._save_error(int(step), nbytes, e) from e
    if saved:
      self._pending = (int(step), nbytes)
      self._last_step = int(step)
    if force:
      self.wait_until_finished()
    return saved

  def failed(self) -> bool:
    """Whether this process's last background save has ended in an error. Never waits."""
    if (self._failure is None and self._pending is not None
        and not self._manager.is_saving_in_progress()):
      self._collect()
    return self._failure is not None

  def _collect(self) -> None:
    """Waits for the save being written and keeps its error as a CheckpointSaveError."""
    step, nbytes = self._pending
    self._pending = None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._failure = self._save_error(step, nbytes, e)
      self._failure.__cause__ = e

  def raise_failure(self, elsewhere: bool = False) -> None:
    """Raises this process's save error; or, if `elsewhere` (the processes agreed that a
    save failed), that it failed on another process, whose own line gives the cause."""
    if self._failure is not None:
      self._raised = True
      raise self._failure
    if elsewhere:
      self._raised = True
      raise CheckpointSaveError(self._save_message(
          self._last_step, "it failed on another process (that process's line has the cause)",
          0))

  def _save_error(self, step: int, nbytes: int, error: BaseException) -> CheckpointSaveError:
    logs.ORBAX_ECHOES.failed = True
    first = logs.ORBAX_ECHOES.first_error
    text = f'{error} {first or ""}'
    logs.ORBAX_ECHOES.first_error = None  # Used once: the next failure has its own.
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
      cause = os.strerror(int(code.group(1)))
    elif self.run.remote:  # The store's answer (403: no permission, 429: quota), in its words.
      cause = storage.one_line(first or error)
    else:
      cause = _one_line(error)
    need = re.search(r'Failed to write (\d+) bytes', text)
    return CheckpointSaveError(self._save_message(
        step, cause, nbytes, failed=int(need.group(1)) if need else None,
        free=_free_bytes(self.directory)))

  def _save_message(self, step: int, cause: str, nbytes: int, *, failed: int | None = None,
                    free: int | None = None) -> str:
    space = f'; the checkpoint holds {nbytes / 2**20:,.1f} MiB' if nbytes else ''
    if failed is not None:
      space += f', a write of {failed / 2**20:,.1f} MiB failed'
    if free is not None:
      space += f', {free / 2**20:,.1f} MiB free there'
    kept = self.latest_step()
    resume = f'resume from step {kept}' if kept is not None else 'start again'
    fix = ("check the bucket's permissions and quota" if self.run.remote else 'make room')
    return (f'saving step {step} to {self.directory / str(step)} failed: {cause}{space}. Training '
            f'stopped; {fix} (or point --workdir elsewhere) and run the same command to {resume}.')

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
    verify(step_dir)
    try:
      restored = self._manager.restore(int(step), args=ocp.args.Composite(**{
          STATE: ocp.args.StandardRestore(target),
          META: ocp.args.JsonRestore(),
      }))
    except Exception as e:  # pylint: disable=broad-except
      logs.ORBAX_ECHOES.failed = True
      raise CheckpointError(
          f'cannot restore checkpoint {step_dir} ({_one_line(e)}): resume with the config that '
          'wrote it (its meta/metadata holds it), or point --workdir elsewhere.') from e
    return _wrap_keys(abstract_state, restored[STATE]), dict(restored[META])

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any], int] | None:
    """(state, meta, step) of the newest step that restores, or None if there is none.

    A step that cannot be restored is moved aside (`set_aside`), with a warning naming it
    and the cause, and the next older one is tried. If none restores, the first error is
    raised and every step is back where it was.
    """
    moved, first_error = [], None
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, abstract_state)
      except CheckpointError as e:
        first_error = first_error or e
        moved.append((step, self.set_aside(step)))
        logging.warning('Skipping checkpoint step %d: %s It is kept in %s.', step, e, moved[-1][1])
        continue
      return state, meta, step
    for step, path in moved:  # Nothing restored: the damage is not the steps' alone.
      self._move(path, self.directory / str(step))
    if first_error is not None:
      raise first_error
    return None

  def set_aside(self, step: int) -> epath.Path:
    """Moves step `step` to <workdir>/checkpoints.damaged/<step> (numbered if taken)."""
    aside = self.run.damaged / str(step)
    n = 1
    while aside.exists():
      aside = self.run.damaged / f'{step}.{n}'
      n += 1
    self._move(self.directory / str(step), aside)
    return aside

  def _move(self, source: epath.Path, dest: epath.Path) -> None:
    distributed.on_process_0(f'move {source} to {dest}', lambda: storage.move_tree(source, dest))
    self._manager.reload()

  def wait_until_finished(self) -> None:
    """Waits for the save being written; raises CheckpointSaveError if it failed."""
    if self._pending is not None:
      self._collect()
    self.raise_failure()

  def close(self) -> None:
    """Waits for the last save and closes orbax's threads; a save error is raised after.

    After a save error was raised nothing is waited for: on the processes whose own save
    did not fail, orbax's thread waits for the failed one in a barrier it never reaches.
    """
    if self._closed:
      return
    self._closed = True
    try:
      if not self._raised:
        self.wait_until_finished()
    finally:
      try:
        if not self._raised or self._failure is not None:
          self._manager.close()
      except Exception:  # pylint: disable=broad-except
        pass  # Its only error is the failed save that wait_until_finished has just raised.
      logs.ORBAX_ECHOES.detach()

  def __enter__(self) -> 'Checkpoints':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _files(directory: epath.Path) -> list[epath.Path]:
  """Every file under `directory`, sorted (`walk`: object stores have no recursive glob)."""
  return sorted(d / name for d, _, names in directory.walk() for name in names)


def _kvstore_url(directory: epath.Path) -> str:
  """`directory` as a tensorstore kvstore URL: gs://... as it is, a local path as file://."""
  text = os.fspath(directory)
  return f'{text}/' if storage.is_remote(text) else f'file://{text}/'


def verify(step_dir: epath.Path) -> None:
  """Raises CheckpointError naming a missing or unreadable file of a step, before orbax
  reads it: the files orbax needs, its JSON metadata, then every key of the state's OCDBT
  store, read synchronously (a truncated data file fails there, by name)."""
  step_dir = epath.Path(step_dir)
  for name in REQUIRED:
    if not (step_dir / name).is_file():
      raise CheckpointError(f'checkpoint {step_dir} is incomplete: {step_dir / name} is missing.')
  for path in _files(step_dir):
    # Every file but OCDBT's binary ones (manifests, data under d/) and orbax's commit marks
    # is JSON: the tree and array metadata, the shardings, the meta item.
    binary = path.parent.name == 'd' or path.name in ('manifest.ocdbt', COMMIT_SUCCESS)
    if binary:
      continue
    try:
      json.loads(path.read_text())
    except Exception as e:  # pylint: disable=broad-except  (OSError, ValueError, or the store's)
      raise CheckpointError(f'checkpoint {step_dir} is damaged: {path} is not readable JSON '
                            f'({_one_line(e)}).') from None
  try:
    store = ts.KvStore.open({'driver': 'ocdbt', 'base': _kvstore_url(step_dir / STATE)}).result()
    for key in store.list().result():
      store.read(key).result()
  except Exception as e:  # pylint: disable=broad-except
    named = _named_file(str(e), step_dir / STATE)
    raise CheckpointError(f'checkpoint {step_dir} is damaged: {named} cannot be read '
                          f'({_one_line(e)}).') from None


def _all_processes(flags) -> np.ndarray:
  """[process, flag] of every process's `flags` (a collective: all processes call it)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32))).reshape(
      jax.process_count(), len(flags))


def _free_bytes(directory: epath.Path) -> int | None:
  if storage.is_remote(directory):
    return None  # An object store has no free space to check; its quota errors say.
  try:
    return shutil.disk_usage(directory).free
  except OSError:
    return None  # Gone: orbax's own error will say.


def _named_file(text: str, state_dir: epath.Path) -> str:
  """The file a tensorstore error is about: named in it, or else the one file of the size a
  short read reports (OCDBT names the data file only in some of its errors)."""
  files = re.findall(r'local file "([^"]+)"', text)
  if files:
    return files[-1]
  size = re.search(r'value of size (\d+)', text)
  if size:
    sized = [p for p in _files(state_dir) if p.stat().length == int(size.group(1))]
    if len(sized) == 1:
      return str(sized[0])
  return str(state_dir)


def _unfinished(child: epath.Path) -> bool:
  """Whether a child of checkpoints/ is a save that never completed: orbax's temporary
  directory on a local disk; on an object store, a step without orbax's commit mark."""
  if UNFINISHED in child.name:
    return True
  return storage.is_remote(child) and child.name.isdigit() and not (child / COMMIT_SUCCESS).exists()


def remove_unfinished_saves(workdir: str | os.PathLike) -> list[str]:
  """Removes the saves that never completed (a crash, a full disk), with a log line each
  giving their size; process 0 only. They are never a checkpoint orbax reads. (Orbax's
  `cleanup_tmp_directories` would remove them too, but silently, from its own thread.)"""
  directory = RunDir(workdir).checkpoints
  removed = []
  if jax.process_index() != 0 or not directory.is_dir():
    return removed
  for child in sorted(directory.iterdir()):
    if child.is_dir() and _unfinished(child):
      size = storage.size(child)
      child.rmtree()
      logging.info('Removed %s, an unfinished save of an earlier run (%.1f MiB).', child,
                   size / 2**20)
      removed.append(child.name)
  return removed


def _locate(path: str | os.PathLike) -> tuple[epath.Path, int]:
  """(checkpoints directory, step) of the latest finished checkpoint under `path`: a
  training workdir, its checkpoints/ directory, or one checkpoints/<step> directory."""
  path = storage.path(path)
  usage = 'pass a training workdir, its checkpoints/ directory, or one checkpoints/<step> directory.'
  if not path.is_dir():
    raise FileNotFoundError(f'{path} is not a directory; {usage}')
  if (path / STATE).is_dir():
    if not path.name.isdigit():
      raise FileNotFoundError(f'{path} is not named by its step number, as orbax reads it; '
                              'pass the checkpoints/<step> directory the run wrote.')
    return path.parent, int(path.name)
  directory = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
  steps = sorted(int(c.name) for c in directory.iterdir()
                 if c.name.isdigit() and c.is_dir() and not _unfinished(c))
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {path}; {usage}')
  return directory, steps[-1]


def _reading_manager(directory: epath.Path) -> ocp.CheckpointManager:
  """A manager that only reads the checkpoints in `directory` (create=False). Not orbax's
  read_only option: it logs two warnings on every open ("Given directory is read only"),
  for a manager that is only ever asked to read.

  The manager training writes with: it reads a step's own metadata (a checkpointer on
  state/ alone looks for it there and warns). Both items are registered so that orbax does
  not warn about `meta`. `state` is read with the PyTree handler (the Standard handler
  training saves with is a thin wrapper over it, same files) because its PyTreeRestore can
  read the params alone (partial_restore), not the optimizer state beside them.
  """
  try:
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler(), META: ocp.JsonCheckpointHandler()})
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'cannot open {directory} ({_one_line(e)}); pass a training '
                          'workdir or its checkpoints/ directory.') from e


def load_params(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """The params of the latest checkpoint under `path` as nested numpy arrays, on the host.

  path: a training workdir, its checkpoints/ directory, or one checkpoints/<step>
  directory (named by its step, as orbax finds it), local or on an object store. Needs no
  mesh (arrays saved sharded come back whole) and no TensorFlow.
  """
  directory, step = _locate(path)
  state_dir = directory / str(step) / STATE
  manager = _reading_manager(directory)
  logs.ORBAX_ECHOES.attach()
  try:
    tree = manager.item_metadata(step)[STATE].tree
    target = {'params': tree['params']}
    # Host numpy arrays: no mesh, whatever the layout the run saved them with.
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)}))
  except Exception as e:  # pylint: disable=broad-except
    logs.ORBAX_ECHOES.failed = True
    raise CheckpointError(
        f'cannot read params from {state_dir} ({_one_line(e)}); pass another step '
        'directory (checkpoints/<step>).') from e
  finally:
    manager.close()
    logs.ORBAX_ECHOES.detach()
  return restored[STATE]['params']


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The meta dict (step, epoch, config as JSON text, ...) of the latest checkpoint under
  `path` (the places `load_params` takes), on the host; {} if that checkpoint has none."""
  directory, step = _locate(path)
  if not (directory / str(step) / META).is_dir():
    return {}
  manager = _reading_manager(directory)
  logs.ORBAX_ECHOES.attach()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
  except Exception as e:  # pylint: disable=broad-except
    logs.ORBAX_ECHOES.failed = True
    raise CheckpointError(f'cannot read {directory / str(step) / META} ({_one_line(e)}); pass '
                          'another step directory (checkpoints/<step>); this one is left as it '
                          'is.') from e
  finally:
    manager.close()
    logs.ORBAX_ECHOES.detach()
  return dict(restored[META] or {})

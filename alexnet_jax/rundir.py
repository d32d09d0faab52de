"""The run directory (`--workdir`) as one run's own: its lock, and what a resume may change.

- `Lock`: an OS lock (`fcntl.flock`) on DIR/run.lock, held by process 0 from before the
  first write until the process ends. The kernel drops it on any exit, kill -9 included,
  so a lock is never left behind; a second run on the same directory stops at once and
  names the holder. The file itself stays (removing it would let a third run lock a new
  file while the second still holds the old one); its text only says who held it last.
- `config_changes`: the fields a resumed run's config changes from DIR/config.json. A
  change to what is being trained (the network, data, optimizer, batch, schedule, seed)
  stops the run unless `config.resume_overrides` names it; a change that only extends or
  observes the run (its length, logging, evaluation, checkpoint cadence, device layout)
  goes on, with a log line.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket

import numpy as np

LOCK_FILE = 'run.lock'
CONFIG_FILE = 'config.json'

# Fields a resume may change freely: how long the run goes on, what it logs and evaluates,
# how often it saves, and where the devices and files are. Prefixes end with a dot.
EXTENDS_OR_OBSERVES = (
    'num_epochs', 'max_steps', 'log_every_steps', 'eval_every_epochs', 'eval_views',
    'eval_batch_size', 'checkpoint_every_steps', 'keep_checkpoints', 'resume_overrides',
    'reevaluate', 'mesh.', 'data.prefetch_batches', 'data.data_dir', 'data.manual_dir',
    'data.prepared_dir', 'data.use_prepared',
)


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir's lock."""


class Lock:
  """`fcntl.flock` on DIR/run.lock for a `with` block (process 0 of a run takes it).

  flock works between processes of one machine, and on NFS (Linux emulates it with NFS
  byte-range locks); it does not exist on object stores such as GCS, including their
  FUSE mounts, where two machines would not see each other's lock (README, "What a run
  directory survives"). Where the filesystem refuses the call, the run goes on with a
  warning rather than failing.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def __enter__(self) -> 'Lock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> bool:
    """Takes the lock, or raises WorkdirInUse naming the holder. False: not supported here."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      raise WorkdirInUse(
          f'workdir {os.path.dirname(self.path)} is in use by {holder}: wait for that run to end '
          'or stop it, or choose another --workdir.') from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        os.close(fd)
        raise
      from absl import logging  # pylint: disable=g-import-not-at-top
      logging.warning('%s: this filesystem has no flock (%s), so nothing stops a second run '
                      'from writing into this workdir at the same time.', self.path, e.strerror)
      os.close(fd)
      return False
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }).encode() + b'\n')
    self._fd = fd
    return True

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Closing the last descriptor drops the flock.
      self._fd = None


def _holder(fd: int) -> str:
  try:
    text = os.pread(fd, 4096, 0).decode()
    info = json.loads(text)
    return f"PID {info['pid']} on host {info['host']} (since {info['since']})"
  except (OSError, ValueError, KeyError, TypeError):
    # The holder took the lock a moment ago and has not written its name yet.
    return 'another process (its PID is not recorded yet)'


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
  return flat


def _matches(field: str, names) -> bool:
  return any(field == n or (n.endswith('.') and field.startswith(n)) or field.startswith(n + '.')
             for n in names if n)


def config_changes(saved_json: str, config) -> tuple[dict, dict]:
  """(guarded, free): {field: (saved, now)} of the fields `config` changes from `saved_json`.

  Fields absent from the saved config (added to the code since) are not changes: the run
  gets their current defaults, as it would have had they existed.
  """
  saved = _flatten(json.loads(saved_json))
  now = _flatten(json.loads(config.to_json()))
  changed = {f: (saved[f], now[f]) for f in sorted(saved.keys() & now.keys()) if saved[f] != now[f]}
  free = {f: v for f, v in changed.items() if _matches(f, EXTENDS_OR_OBSERVES)}
  guarded = {f: v for f, v in changed.items() if f not in free}
  return guarded, free


def _describe(changes: dict) -> str:
  return ', '.join(f'{f} {a!r} -> {b!r}' for f, (a, b) in changes.items())


def check_resume(workdir: str, config) -> None:
  """Raises a one-line ValueError if `config` changes what DIR/config.json trained, beyond
  `config.resume_overrides`; logs the changes that go on. Reads only."""
  path = os.path.join(workdir, CONFIG_FILE)
  saved = os.path.join(workdir, 'checkpoints')
  if not os.path.exists(path) or not (os.path.isdir(saved) and any(
      name.isdigit() for name in os.listdir(saved))):
    return  # No checkpoint to continue from: the new config starts the run afresh.
  with open(path) as f:
    text = f.read()
  try:
    guarded, free = config_changes(text, config)
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON ({e}): restore it from a checkpoint\'s '
                     'meta/metadata, or choose another --workdir.') from None
  allowed = [n.strip() for n in config.get('resume_overrides', '').split(',')]
  refused = {f: v for f, v in guarded.items() if not _matches(f, allowed)}
  if refused:
    raise ValueError(
        f'workdir {workdir} was trained with another config ({path}): {_describe(refused)}. '
        'Resume with the saved values, choose another --workdir for a new run, or continue from '
        f'the checkpoint anyway with --config.resume_overrides={",".join(refused)}.')
  from absl import logging  # pylint: disable=g-import-not-at-top
  if guarded:
    logging.warning('Resuming with changes allowed by config.resume_overrides: %s.',
                    _describe(guarded))
  if free:
    logging.info('Resuming with changes that extend or observe the run: %s.', _describe(free))


def write_config(workdir: str, config) -> None:
  """DIR/config.json, replaced in one rename: the config of the run from here on (each
  checkpoint's meta keeps the config that wrote it)."""
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json(indent=2))
  os.replace(path + '.tmp', path)


@contextlib.contextmanager
def hold(workdir: str):
  """Process 0 holds the workdir's lock for the `with` block; every process of a run
  learns whether it got it, so that all stop together when another run holds it."""
  import jax  # pylint: disable=g-import-not-at-top
  lock = Lock(workdir)
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except WorkdirInUse as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not held and error is None:
      error = WorkdirInUse(f'workdir {workdir} is in use by another run (process 0 says which).')
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    lock.release()

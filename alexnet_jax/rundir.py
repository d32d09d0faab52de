"""The run directory (`--workdir`): the one owner of its files' names, its lock, and what a
resume may change. The workdir may be a local path or an object-store URI (`gs://...`).

- `RunDir`: where each of a run's files lives (config.json, metrics.jsonl, eval.json,
  checkpoints/, checkpoints.damaged/, tensorboard/, run.lock). Every module that reads or
  writes a run's files takes their paths from here.
- `Lock` (local disks): an OS lock (`fcntl.flock`) on DIR/run.lock, held by process 0 from
  before the first write until the process ends. The kernel drops it on any exit, kill -9
  included, so a lock is never left behind; a second run on the same directory stops at
  once and names the holder. The file itself stays (removing it would let a third run lock
  a new file while the second still holds the old one); its text only says who held it.
- `LeaseLock` (object stores, which have no flock): one object, DIR/run.lock, created only if
  it does not exist (GCS `ifGenerationMatch=0`), recording host, PID, start and lease; a
  thread renews it (a conditional rewrite, `ifGenerationMatch=<its generation>`) while the
  run lives, and the run deletes it at the end. A second run stops with the same one line.
  A lock whose lease ran out (a crashed or pre-empted run: a pod's VMs are new after a
  pre-emption) is taken over, with a log line, by a rewrite conditioned on the expired
  generation, so of two runs taking it over at once one wins. A holder whose renewal finds
  another generation has lost its lock, and stops.
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
import threading


from alexnet_jax import storage

LOCK_FILE = 'run.lock'
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
EVAL_FILE = 'eval.json'
CHECKPOINTS = 'checkpoints'
DAMAGED = 'checkpoints.damaged'  # Steps that cannot be restored, moved aside (never deleted).
TENSORBOARD = 'tensorboard'

# Fields a resume may change freely: how long the run goes on, what it logs and evaluates,
# how often it saves, and where the devices and files are. Prefixes end with a dot.
EXTENDS_OR_OBSERVES = (
    'num_epochs', 'max_steps', 'log_every_steps', 'eval_every_epochs', 'eval_views',
    'eval_batch_size', 'checkpoint_every_steps', 'keep_checkpoints', 'resume_overrides',
    'reevaluate', 'mesh.', 'data.prefetch_batches', 'data.data_dir', 'data.manual_dir',
    'data.prepared_dir', 'data.use_prepared', 'lock_lease_s',
)


class RunDir:
  """The paths of one run's files, under a local or remote workdir."""

  def __init__(self, workdir):
    self.root = storage.path(workdir)

  def __str__(self) -> str:
    return os.fspath(self.root)

  @property
  def remote(self) -> bool:
    return storage.is_remote(self.root)

  config = property(lambda self: self.root / CONFIG_FILE)
  metrics = property(lambda self: self.root / METRICS_FILE)
  eval = property(lambda self: self.root / EVAL_FILE)
  checkpoints = property(lambda self: self.root / CHECKPOINTS)
  damaged = property(lambda self: self.root / DAMAGED)
  tensorboard = property(lambda self: self.root / TENSORBOARD)
  lock = property(lambda self: self.root / LOCK_FILE)

  def has_checkpoint(self) -> bool:
    """Whether checkpoints/ holds a step directory (finished or not: a run to continue)."""
    return self.checkpoints.is_dir() and any(p.name.isdigit() for p in self.checkpoints.iterdir())


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir's lock."""


def _record(lease_s: float | None = None) -> dict:
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  record = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': now}
  if lease_s is not None:
    record['lease_s'] = lease_s
  return record


def _describe_holder(info: dict) -> str:
  try:
    return f"PID {info['pid']} on host {info['host']} (since {info['since']})"
  except (KeyError, TypeError):
    # The holder took the lock a moment ago and has not written its name yet.
    return 'another process (its PID is not recorded yet)'


def _in_use(workdir, holder: str) -> WorkdirInUse:
  return WorkdirInUse(f'workdir {workdir} is in use by {holder}: wait for that run to end or '
                      'stop it, or choose another --workdir.')


class Lock:
  """`fcntl.flock` on DIR/run.lock, on a local disk, for a `with` block (process 0 of a run
  takes it).

  flock works between processes of one machine, and on NFS (Linux emulates it with NFS
  byte-range locks); it does not exist on object stores (`LeaseLock`) nor on their FUSE
  mounts, where two machines would not see each other's lock. Where the filesystem refuses
  the call, the run goes on with a warning rather than failing.
  """

  lost = False  # An OS lock cannot be taken away from a live process.

  def __init__(self, workdir: str):
    self.path = os.fspath(RunDir(workdir).lock)
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
      try:
        holder = _describe_holder(json.loads(os.pread(fd, 4096, 0).decode()))
      except (OSError, ValueError):
        holder = _describe_holder({})
      os.close(fd)
      raise _in_use(os.path.dirname(self.path), holder) from None
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
    os.write(fd, json.dumps(_record()).encode() + b'\n')
    self._fd = fd
    return True

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Closing the last descriptor drops the flock.
      self._fd = None


class LeaseLock:
  """DIR/run.lock as a leased object on Google Cloud Storage (see the module docstring).

  lease_s: how long the lock stays valid without a renewal; it is renewed every lease_s / 4
  seconds, so three renewals in a row may fail (a network blip) before it can expire. A
  taker judges expiry by the object's last write time, kept by the store, against its own
  clock: hosts whose clocks are within seconds of the store's (NTP, as on GCE) are assumed.
  """

  LEASE_S = 120.0

  def __init__(self, workdir: str, lease_s: float = LEASE_S):
    from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
    self.path = os.fspath(RunDir(workdir).lock)
    if not self.path.startswith('gs://'):
      raise ValueError(f'{self.path}: a leased lock needs a gs:// workdir.')
    bucket, self._name = self.path[len('gs://'):].split('/', 1)
    self.lease_s = float(lease_s)
    self._bucket = gcs.Client().bucket(bucket)
    self._generation = None
    self._stop = threading.Event()
    self._thread = None
    self.lost = False  # Set by the renewing thread when another run took the lock.

  def __enter__(self) -> 'LeaseLock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def _write(self, if_generation_match: int) -> int:
    """Writes this process's record, if the object's generation is `if_generation_match`
    (0: if there is none); returns the new generation."""
    blob = self._bucket.blob(self._name)
    # A multipart upload (small data): GCS checks the precondition on it, as on every
    # upload; one request, so the object is whole or absent.
    blob.upload_from_string(json.dumps(_record(self.lease_s)), content_type='application/json',
                            if_generation_match=if_generation_match)
    return blob.generation

  def acquire(self) -> bool:
    """Takes the lock (or an expired one), or raises WorkdirInUse naming the holder."""
    from absl import logging  # pylint: disable=g-import-not-at-top
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    workdir = self.path.rsplit('/', 1)[0]
    try:
      try:
        self._generation = self._write(0)
      except exceptions.PreconditionFailed:
        held = self._bucket.get_blob(self._name)
        if held is None:  # Released between the two requests: try once more.
          self._generation = self._write(0)
        else:
          try:
            info = json.loads(held.download_as_bytes(if_generation_match=held.generation))
          except (ValueError, exceptions.PreconditionFailed):
            info = {}
          lease = float(info.get('lease_s', self.LEASE_S)) if isinstance(info, dict) else self.LEASE_S
          expires = held.updated + datetime.timedelta(seconds=lease)
          now = datetime.datetime.now(datetime.timezone.utc)
          if now < expires:
            raise _in_use(workdir, f'{_describe_holder(info)}, whose lease runs out at '
                          f'{expires.isoformat(timespec="seconds")} unless that run renews it'
                          ) from None
          try:
            self._generation = self._write(held.generation)
          except exceptions.PreconditionFailed:  # Another run took it over first.
            raise _in_use(workdir, 'another run (the lock changed while this run read it)'
                          ) from None
          logging.warning('Took over the lock %s of %s: its %g s lease ran out at %s (that run '
                          'crashed or was pre-empted).', self.path, _describe_holder(info), lease,
                          expires.isoformat(timespec='seconds'))
    except WorkdirInUse:
      raise
    except Exception as e:  # pylint: disable=broad-except  (credentials, permissions, network)
      raise ValueError(f'cannot take the lock {self.path} ({storage.one_line(e)}): check the '
                       'credentials and their permissions on the bucket, or choose another '
                       '--workdir.') from None
    self._stop.clear()
    self._thread = threading.Thread(target=self._renew, name='alexnet_jax-lock-lease',
                                    daemon=True)
    self._thread.start()
    return True

  def _renew(self) -> None:
    from absl import logging  # pylint: disable=g-import-not-at-top
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    while not self._stop.wait(self.lease_s / 4):
      try:
        self._generation = self._write(self._generation)
      except exceptions.PreconditionFailed:
        self.lost = True
        logging.error('Lost the lock %s: another run took it over (this run did not renew its '
                      'lease in time). This run stops.', self.path)
        return
      except Exception as e:  # pylint: disable=broad-except  (a blip: the next renewal may pass)
        logging.warning('Could not renew the lock %s (%s); retrying in %g s.', self.path,
                        storage.one_line(e), self.lease_s / 4)

  def release(self) -> None:
    """Stops renewing and deletes the object (if it is still ours)."""
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    if self.lost:
      return  # Another run's lock now.
    from absl import logging  # pylint: disable=g-import-not-at-top
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    try:
      self._bucket.blob(self._name).delete(if_generation_match=self._generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
      pass  # Gone, or taken over: not ours to delete.
    except Exception as e:  # pylint: disable=broad-except  (the store refuses: say what it means)
      logging.warning('Could not remove the lock %s (%s): the next run on this workdir waits '
                      'until its lease runs out, %g s after its last renewal.', self.path,
                      storage.one_line(e), self.lease_s)


def lock_for(workdir: str, lease_s: float = LeaseLock.LEASE_S):
  """The lock a run takes on `workdir`: flock on a local disk, a lease on GCS; None (with a
  warning) on other stores, which this project cannot lock."""
  if not storage.is_remote(workdir):
    return Lock(workdir)
  if os.fspath(workdir).startswith('gs://'):
    return LeaseLock(workdir, lease_s)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.warning('%s: no lock on this store (only local disks and gs:// are locked), so nothing '
                  'stops a second run from writing into this workdir at the same time.', workdir)
  return None


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
  run = RunDir(workdir)
  path = run.config
  if not path.exists() or not run.has_checkpoint():
    return  # No checkpoint to continue from: the new config starts the run afresh.
  text = path.read_text()
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
  """DIR/config.json, written whole (`storage.write_whole`): the config of the run from here
  on (each checkpoint's meta keeps the config that wrote it)."""
  path = RunDir(workdir).config
  with storage.writing(path):
    storage.write_whole(path, config.to_json(indent=2))


@contextlib.contextmanager
def hold(workdir: str, lease_s: float = LeaseLock.LEASE_S):
  """Process 0 holds the workdir's lock for the `with` block (yielding it, or None where
  the store has none or on the other processes); every process of a run learns whether it
  got it, so that all stop together when another run holds it."""
  from alexnet_jax import distributed  # pylint: disable=g-import-not-at-top  (jax)

  def take():
    lock = lock_for(workdir, lease_s)
    if lock is not None:
      lock.acquire()
    return lock

  lock = distributed.on_process_0(f'take the lock of workdir {workdir}', take)
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()

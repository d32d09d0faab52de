"""The run directory's lock: one run at a time writes a workdir.

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
from alexnet_jax.rundir.files import RunDir

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


@contextlib.contextmanager
def hold(workdir: str, lease_s: float = LeaseLock.LEASE_S):
  """Process 0 holds the workdir's lock for the `with` block (yielding it, or None where
  the store has none or on the other processes); every process of a run learns whether it
  got it, so that all stop together when another run holds it."""
  from alexnet_jax.parallel import distributed  # pylint: disable=g-import-not-at-top  (jax)

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

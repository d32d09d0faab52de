"""The libraries' log lines, re-levelled so that a run's own lines stay readable.

- `QuietLibraries` (main): the libraries' INFO chatter (orbax logs every file of every
  checkpoint) is dropped; their warnings and errors are kept.
- `ORBAX_ECHOES` (checkpoints): the echoes of a failed save or read, which the run reports
  itself in one line, go to DEBUG.
"""

from __future__ import annotations

import logging as std_logging
import sys
import traceback

from absl import logging


class QuietLibraries(std_logging.Filter):
  """Drops the libraries' INFO records (orbax, TFDS, etils, JAX); keeps their warnings."""

  NOISY = ('/orbax/', '/tensorflow_datasets/', '/etils/', '/jax/_src/')

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(n in record.pathname for n in self.NOISY)


class OrbaxEchoes(std_logging.Filter):
  """The echoes of a failed save (or read), which we report ourselves as one line.

  1. Orbax logs each failure of its background threads at ERROR with a traceback, one per
     thread, before the failure reaches us.
  2. When a write fails part way (a disk filled by another program), orbax's
     `asyncio.gather` over tensorstore's writes returns at the first error and orbax closes
     that thread's event loop; the other writes then fail too, and tensorstore's callback
     for each calls `loop.call_soon_threadsafe` on the closed loop. Python reports each
     as an unraisable `RuntimeError: Event loop is closed`, a traceback with no caller, on
     stderr, after our one line (a failed read leaves them too). The loop and those
     callbacks belong to orbax and tensorstore (nothing of ours can keep that loop open
     until they finish), so these, and only these, go to the log at DEBUG with the rest
     of the failure's detail.

  3. The tasks of a failed read or write whose errors nobody retrieved: asyncio logs each
     ("Task exception was never retrieved", with the tensorstore error) whenever it is
     garbage-collected, which can be in a later step or a later test.

  While any `Checkpoints` (or `load_params`, `load_meta`) is open all three go to DEBUG
  (shown with --verbosity=1), and the last two for the rest of the process once a save or
  read has failed; everything else passes through unchanged.
  """

  def __init__(self):
    super().__init__()
    self._users = 0  # Open `Checkpoints`: the filter stays while any is open.
    self._unraisablehook = None  # The hook ours passes everything else to.
    # After a failed save or read, tensorstore's late callbacks can come after its
    # `Checkpoints` closed: our hook then stays for the rest of the process.
    self.failed = False
    self.first_error = None  # The first orbax error logged (see `filter`).

  def attach(self):
    self._users += 1
    for name in ('absl', 'asyncio'):
      std_logging.getLogger(name).addFilter(self)  # Once: a logger holds a filter once.
    if sys.unraisablehook != self._unraisable:
      self._unraisablehook = sys.unraisablehook
      sys.unraisablehook = self._unraisable

  def detach(self):
    self._users = max(self._users - 1, 0)
    if not self._users:
      std_logging.getLogger('absl').removeFilter(self)
      if not self.failed:
        std_logging.getLogger('asyncio').removeFilter(self)
        if sys.unraisablehook == self._unraisable:
          sys.unraisablehook = self._unraisablehook

  def filter(self, record):
    if record.name == 'asyncio':
      if not _orphaned_orbax_task(record):
        return True
    elif record.levelno >= std_logging.ERROR and record.exc_info and '/orbax/' in record.pathname:
      # The first error of a save: in a multi-process run the error that reaches us can be a
      # barrier timeout between processes, and this the cause (a full disk) behind it.
      self.first_error = self.first_error or record.exc_info[1]
    else:
      return True
    if not std_logging.getLogger('absl').isEnabledFor(std_logging.DEBUG):
      return False
    record.levelno, record.levelname = std_logging.DEBUG, 'DEBUG'
    return True

  def _unraisable(self, unraisable):
    if _closed_loop_callback(unraisable):
      logging.debug('A write of a failed save finished after orbax closed its event loop: '
                    '%s (ignored; the save has failed and is reported once).',
                    unraisable.exc_value)
      return
    (self._unraisablehook or sys.__unraisablehook__)(unraisable)


def _orphaned_orbax_task(record) -> bool:
  """Whether an asyncio log record is a task of a failed orbax read or write whose error
  nobody retrieved (logged when the task is garbage-collected, at any later time): its
  error is a tensorstore one, already reported in one line."""
  if not (record.getMessage().startswith('Task exception was never retrieved')
          and record.exc_info and record.exc_info[1] is not None):
    return False
  error = record.exc_info[1]
  files = [f.filename for f in traceback.extract_tb(error.__traceback__)]
  return 'tensorstore_spec' in str(error) or any('/orbax/' in f or '/tensorstore/' in f
                                                 for f in files)


def _closed_loop_callback(unraisable) -> bool:
  """Whether an unraisable error is `call_soon_threadsafe` on a closed asyncio loop, called
  from native code (a tensorstore future's callback): no Python frame of anyone's calls it."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == 'Event loop is closed'):
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return bool(frames) and frames[0].name == 'call_soon_threadsafe' and 'asyncio' in frames[0].filename


ORBAX_ECHOES = OrbaxEchoes()

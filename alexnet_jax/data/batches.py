"""`Batches`: a tf.data pipeline's iterator that is released explicitly, so every process ends.

Dropping a tf.data iterator stops its prefetching threads and waits for the work they have
in flight. A raw store reads through a Python call (`tf.numpy_function`); once the
interpreter has begun to finalize, a thread that calls into Python never returns, so an
iterator still alive then (a module global, a traceback's frame) can wait forever and the
process never exits: a pod job that does not exit holds its slice. Every pipeline of this
package (training and eval batches, the statistics pass, a prepared copy's writer) is a
`Batches`, closed where it is done with and, at the latest, by an `atexit` hook that runs
before finalization.
"""

from __future__ import annotations

import atexit
import gc
from typing import Iterable, Iterator
import weakref


class Batches:
  """An iterator over a pipeline's batches that releases the pipeline on `close()`, at the
  end of a `with` block, when the batches run out, or at exit (`_close_open_batches`).
  `close()` is idempotent; a closed `Batches` yields nothing more."""

  def __init__(self, iterator: Iterator, *, closes: Iterable = ()):
    self._iterator = iterator
    self._closes = tuple(closes)  # Closed with this one: the pipeline it reads from.
    _OPEN.add(self)

  def __iter__(self):
    return self

  def __next__(self):
    if self._iterator is None:
      raise StopIteration
    try:
      return next(self._iterator)
    except StopIteration:
      self.close()  # A finite pipeline is released as soon as it ends.
      raise

  def close(self) -> None:
    iterator, self._iterator = self._iterator, None
    _OPEN.discard(self)
    if iterator is not None:
      if hasattr(iterator, 'close'):
        iterator.close()  # A generator (device_batches): ends its loop.
      # The last reference to the tf.data iterator: its destructor runs now, unless a
      # reference cycle holds it (then the collector frees it).
      alive = weakref.ref(iterator)
      del iterator
      if alive() is not None:
        gc.collect()
    for other in self._closes:
      if hasattr(other, 'close'):
        other.close()

  def __enter__(self) -> Batches:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


_OPEN: weakref.WeakSet[Batches] = weakref.WeakSet()


@atexit.register  # Runs before finalization (the pipelines' Python calls still return).
def _close_open_batches() -> None:
  for batches in list(_OPEN):
    batches.close()

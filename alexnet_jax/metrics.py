"""Where training's numbers go, and the figures its console lines show.

- `Writer`: one JSON object per line to DIR/metrics.jsonl, mirrored to TensorBoard under
  DIR/tensorboard (local or on an object store); `drop_after` removes a resumed run's rows
  that it will log again; `logged` reads a column back.
- `Throughput`: images/s and ETA since the last report, for train.py's console lines.
- `Progress`: a one-line progress bar on stderr (evaluation, the statistics pass).

`Writer` and `Progress` write only when `enabled`: the callers enable them on process 0
alone (the other processes compute the same global metrics).
"""

from __future__ import annotations

import json
import sys
import time

from absl import logging

from alexnet_jax import rundir, storage


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def logged(workdir: str, key: str) -> list[float]:
  """The values of `key` in DIR/metrics.jsonl, in order (every session of a resumed run)."""
  path = rundir.RunDir(workdir).metrics
  if not path.exists():
    return []
  values = []
  with path.open() as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue  # A torn last line.
      if key in row:
        values.append(row[key])
  return values


class Writer:
  """Appends one JSON object per line to DIR/metrics.jsonl and mirrors it to TensorBoard.

  On an object store, which has no append, each row rewrites the file (TensorFlow's GCS
  filesystem uploads it whole again): at most a few MB for a whole paper run, written once
  per logged step.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    run = rundir.RunDir(workdir)
    self.path = run.metrics
    self._tb, self._tb_dir = None, run.tensorboard
    if enabled:
      try:  # TensorFlow is already loaded by the input pipeline; TensorBoard is a bonus.
        import tensorflow as tf
        self._tb = tf.summary.create_file_writer(str(run.tensorboard))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('No TensorBoard events (%s); metrics.jsonl is still written.', e)

  def drop_after(self, step: int) -> None:
    """Removes the rows logged after `step` (a resumed run's checkpoint) from metrics.jsonl.

    A run that crashed after its last checkpoint logged steps it will now train again;
    keeping those rows would list (and plot) them twice. A torn last line from the crash
    is dropped too. The file is replaced whole (`storage.write_whole`), so a second crash
    leaves either the old or the new file. TensorBoard's event files are not rewritten.
    """
    if not self.enabled or not self.path.exists():
      return
    kept, dropped = [], 0
    with self.path.open() as f:
      for line in f:
        try:
          keep = json.loads(line)['step'] <= step
        except (ValueError, KeyError, TypeError):
          keep = False
        if keep:
          kept.append(line if line.endswith('\n') else line + '\n')
        elif line.strip():
          dropped += 1
    if not dropped:
      return
    with storage.writing(self.path):
      storage.write_whole(self.path, ''.join(kept))
    logging.info('Dropped %d rows after step %d from %s: they are trained again.', dropped, step,
                 self.path)

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: (float(v) if not isinstance(v, str) else v)
                                     for k, v in metrics.items()}}
    with storage.writing(self.path):
      with self.path.open('a') as f:
        f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      import tensorflow as tf
      with storage.writing(self._tb_dir):
        with self._tb.as_default(step=int(step)):
          for k, v in record.items():
            if k != 'step' and not isinstance(v, str):
              tf.summary.scalar(k, v)
        self._tb.flush()


class Throughput:
  """Images/s and ETA over the steps since the last report; the compile step is excluded
  because timing starts only at the first `mark` after it."""

  def __init__(self, total_steps: int, batch_size: int):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._t = None
    self._step = None

  def mark(self, step: int) -> tuple[float | None, float | None]:
    """Returns (images/s, seconds left) since the previous mark, or Nones at the first."""
    now = time.perf_counter()
    rate = eta = None
    if self._t is not None and step > self._step:
      steps_per_s = (step - self._step) / (now - self._t)
      rate = steps_per_s * self.batch_size
      eta = (self.total_steps - step) / steps_per_s
    self._t, self._step = now, step
    return rate, eta


class Progress:
  """A one-line progress bar for long loops (evaluation), on stderr, process 0 only."""

  def __init__(self, total: int, label: str, enabled: bool = True, unit: str = 'images'):
    self.total, self.label, self.enabled, self.unit = total, label, enabled, unit
    self.start = time.perf_counter()
    self.done = 0

  def update(self, n: int) -> None:
    self.done += n
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    frac = min(self.done / max(self.total, 1), 1.0)
    bar = '#' * int(frac * 30)
    eta = (self.total - self.done) / rate if rate > 0 else 0.0
    sys.stderr.write(f'\r{self.label} [{bar:<30}] {self.done}/{self.total} {self.unit} '
                     f'{rate:,.0f} {self.unit}/s ETA {format_duration(eta)}')
    sys.stderr.flush()

  def close(self) -> None:
    if self.enabled:
      sys.stderr.write('\n')
      sys.stderr.flush()

"""A run directory and its data on an object store: a real GCS server on 127.0.0.1
(fake-gcs-server, tests/object_store.py) that every client reaches as it would reach GCS.

A tiny run with its workdir, images and data_dir all on gs:// is pre-empted (SIGTERM),
resumed and killed with -9 in the middle of an asynchronous save, then resumed past the
dead run's expired lock to the end: its parameters equal, exactly, those of the same run
trained uninterrupted on a local disk. The lock is checked against the server's own
precondition check, and a store that starts refusing writes stops a run with one line and
takes nothing already saved.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

from google.api_core import exceptions as gcs_exceptions
from google.cloud import storage as gcs
import numpy as np
import pytest
import tensorflow as tf

import alexnet_jax
from alexnet_jax import rundir, storage
from alexnet_jax.analysis import figures
from alexnet_jax.analysis import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'alexnet-jax-remote'
LEASE_S = 4.0  # The runs' lock lease: a killed run's lock expires within a test.
# Every step logged (the runs' losses are compared step by step); one view, to be quick.
RUN = {'eval_views': ('center',), 'log_every_steps': 1, 'lock_lease_s': LEASE_S}


def _env(store) -> dict:
  env = dict(os.environ, **store.env, JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


class Run:
  """`python -m alexnet_jax.main` in a subprocess, its output read line by line."""

  def __init__(self, store, *args):
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'alexnet_jax.main', *args], cwd=REPO, env=_env(store), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.process.stdout:
      self.lines.append(line.rstrip('\n'))

  @property
  def output(self) -> str:
    return '\n'.join(self.lines)

  def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      for line in list(self.lines):
        found = re.search(pattern, line)
        if found:
          return found
      if self.process.poll() is not None and not self._reader.is_alive():
        break
      time.sleep(0.05)
    raise AssertionError(f'no line matches {pattern!r}:\n{self.output[-4000:]}')

  def finish(self, timeout: float = 600) -> int:
    self.process.wait(timeout=timeout)
    self._reader.join(timeout=30)
    return self.process.returncode


@pytest.fixture(scope='module')
def gs_data(object_store, folder):
  """The tiny dark/bright images copied to gs://, and a gs:// data_dir for their statistics."""
  bucket = object_store.make_bucket(BUCKET)
  saved = {k: os.environ.get(k) for k in object_store.env}
  os.environ.update(object_store.env)
  try:
    for root, _, names in tf.io.gfile.walk(folder):
      for name in names:
        target = f'{bucket}/images/{os.path.relpath(os.path.join(root, name), folder)}'
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.copy(os.path.join(root, name), target)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return f'{bucket}/images', f'{bucket}/data_dir'


def _params_equal(a, b):
  """Exactly equal, leaf by leaf (the same computation on the same data)."""
  assert a.keys() == b.keys()
  for name in a:
    for leaf in a[name]:
      np.testing.assert_array_equal(np.asarray(b[name][leaf]), np.asarray(a[name][leaf]),
                                    err_msg=f'{name}.{leaf}')


def _losses(rows):
  return [(r['step'], r['loss']) for r in rows if 'loss' in r]


def _read_rows(path):
  import json  # pylint: disable=g-import-not-at-top
  return [json.loads(line) for line in storage.path(path).read_text().splitlines() if line]


def test_a_gs_run_survives_sigterm_kill9_and_a_store_refusing_writes(
    object_store, on_object_store, gs_data, folder, tmp_path, tiny_config, config_file,
    train_config):
  images, data_dir = gs_data
  # The reference: the same run, uninterrupted, on a local disk with local data.
  whole = str(tmp_path / 'whole')
  train_config(tiny_config(folder, **RUN), whole)
  config = config_file(tmp_path / 'tiny.py',
                       tiny_config(images, **RUN, **{'data.data_dir': data_dir}))
  workdir = f'gs://{BUCKET}/runs/tiny'
  args = (f'--config={config}', f'--workdir={workdir}')
  objects = lambda prefix='runs/tiny/': object_store.objects(BUCKET, prefix)

  # 1. Pre-empted: SIGTERM after step 5 saves the step it is at and exits 0.
  run = Run(object_store, *args)
  run.wait_for(r'step 5/12')
  run.process.send_signal(signal.SIGTERM)
  assert run.finish() == 0, run.output[-3000:]
  saved = int(run.wait_for(r'Pre-empted at step (\d+)').group(1))
  assert saved >= 5
  assert f'runs/tiny/checkpoints/{saved}/commit_success.txt' in objects()
  assert 'runs/tiny/run.lock' not in objects()  # Released: the next run starts at once.

  # 2. Killed (-9) while the next checkpoint is being written: the store holds that save's
  # commit mark, the last object orbax writes, until the process is dead.
  held = (saved // 4 + 1) * 4
  object_store.faults(hold=rf'checkpoints%2F{held}%2Fcommit_success\.txt')
  run = Run(object_store, *args)
  try:
    object_store.wait_held()
  finally:
    run.process.kill()
    run.finish()
    object_store.faults(hold='')
  assert f'Resumed from {workdir}/checkpoints/{saved} at step {saved}' in run.output
  assert f'runs/tiny/checkpoints/{held}/commit_success.txt' not in objects()
  assert any(name.startswith(f'runs/tiny/checkpoints/{held}/state/') for name in objects())
  assert 'runs/tiny/run.lock' in objects()  # Left by the killed run, its lease still running.

  # 3. The same command again, once the dead run's lease ran out: it takes the lock over,
  # removes the unfinished save and ends where the uninterrupted run did.
  time.sleep(LEASE_S + 1)
  run = Run(object_store, *args)
  assert run.finish() == 0, run.output[-3000:]
  assert 'Took over the lock' in run.output and f'PID {run.process.pid}' not in run.output
  assert f'Removed {workdir}/checkpoints/{held}, an unfinished save' in run.output
  assert 'Held-out (center view)' in run.output
  _params_equal(alexnet_jax.load_params(whole), alexnet_jax.load_params(workdir))
  rows = {'whole': _read_rows(os.path.join(whole, 'metrics.jsonl')), 'gs': _read_rows(
      f'{workdir}/metrics.jsonl')}
  assert [s for s, _ in _losses(rows['gs'])] == list(range(1, 13))  # Each step once.
  assert _losses(rows['gs']) == _losses(rows['whole'])
  # What a notebook reads: the params and the config they were trained with.
  params, run_config = alexnet_jax.load_run(workdir)
  _params_equal(alexnet_jax.load_params(whole), params)
  assert run_config.data.folder == images and run_config.num_epochs == 2
  assert any(n.startswith('runs/tiny/tensorboard/events.out.tfevents') for n in objects())
  assert any(n.startswith('data_dir/alexnet_jax_stats/') for n in objects('data_dir/'))
  # The readers of finished runs: the report's table and the figures, written to the bucket
  # as the same bytes as from the local run.
  timeless = lambda run: [{k: v for k, v in r.items() if k != 'images_per_s'} for r in run.records]
  assert timeless(report.read_run(workdir)) == timeless(report.read_run(whole))
  made = {where: figures.make_figures(tiny_config(images), where, which=('kernels', 'curves'),
                                      output_dir=f'{where}/figures')['paths']
          for where in (whole, workdir)}
  for name, path in made[workdir].items():
    assert path.startswith(f'{workdir}/figures/')
    assert storage.path(path).read_bytes() == storage.path(made[whole][name]).read_bytes()

  # 4. The store refuses writes from step 14 of a longer run (permissions revoked, a quota
  # hit): one line, and every checkpoint and metrics row written before stays as it was.
  before = {name: size for name, size in objects().items() if '/checkpoints/' in name}
  run = Run(object_store, *args, '--config.num_epochs=3')
  try:
    run.wait_for(r'step 14/18')
    object_store.faults(refuse_writes=True)
    assert run.finish() == 1, run.output[-3000:]
  finally:
    object_store.faults(refuse_writes=False)
  errors = [line for line in run.lines if line.startswith('error: ')]
  assert len(errors) == 1 and errors[0] == run.lines[-1], run.output[-3000:]
  assert 'storage.objects.create' in errors[0] and 'Traceback' not in run.output
  after = objects()
  assert all(after.get(name) == size for name, size in before.items())
  _params_equal(alexnet_jax.load_params(whole), alexnet_jax.load_params(workdir))  # Step 12.
  assert _losses(_read_rows(f'{workdir}/metrics.jsonl'))[:12] == _losses(rows['whole'])


def test_the_lock_is_one_object_created_if_absent_and_leased(on_object_store, gs_data, caplog):
  bucket = gcs.Client().bucket(BUCKET)
  # The server itself refuses a second create-if-absent: the lock's test means something.
  bucket.blob('precondition/x').upload_from_string(b'1', if_generation_match=0)
  with pytest.raises(gcs_exceptions.PreconditionFailed):
    bucket.blob('precondition/x').upload_from_string(b'2', if_generation_match=0)

  workdir = f'gs://{BUCKET}/runs/locked'
  first = rundir.LeaseLock(workdir, lease_s=1.0)
  first.acquire()
  generation = first._generation  # pylint: disable=protected-access
  with pytest.raises(rundir.WorkdirInUse, match=f'in use by PID {os.getpid()} on host .*lease runs out'):
    rundir.LeaseLock(workdir, lease_s=1.0).acquire()
  time.sleep(0.6)  # Renewed every quarter of the lease: a new generation.
  assert first._generation != generation  # pylint: disable=protected-access
  first.release()
  assert bucket.get_blob('runs/locked/run.lock') is None

  # A holder that stops renewing (a crash) loses it once the lease has run out.
  crashed = rundir.LeaseLock(workdir, lease_s=1.0)
  crashed.acquire()
  crashed._stop.set()  # pylint: disable=protected-access  (its renewals stop; the object stays)
  crashed._thread.join()  # pylint: disable=protected-access
  time.sleep(1.2)
  with caplog.at_level('WARNING'):
    taker = rundir.LeaseLock(workdir, lease_s=1.0)
    taker.acquire()
  assert f'Took over the lock {workdir}/run.lock of PID {os.getpid()}' in caplog.text
  # The crashed holder, renewing again, finds another run's generation: it has lost it.
  crashed._stop.clear()  # pylint: disable=protected-access
  renew = threading.Thread(target=crashed._renew)  # pylint: disable=protected-access
  renew.start()
  renew.join(timeout=5)
  assert crashed.lost and not taker.lost
  taker.release()


def test_a_second_run_on_a_locked_gs_workdir_stops_and_writes_nothing(
    object_store, on_object_store, gs_data, tmp_path, tiny_config, config_file):
  images, data_dir = gs_data
  workdir = f'gs://{BUCKET}/runs/in_use'
  config = config_file(tmp_path / 'tiny.py',
                       tiny_config(images, **RUN, **{'data.data_dir': data_dir}))
  with rundir.LeaseLock(workdir):
    before = object_store.objects(BUCKET, 'runs/in_use/')
    second = Run(object_store, f'--config={config}', f'--workdir={workdir}')
    assert second.finish() == 1
    assert second.lines[-1].startswith(f'error: workdir {workdir} is in use by PID {os.getpid()}'
                                       ), second.output[-3000:]
    assert 'Traceback' not in second.output
    assert object_store.objects(BUCKET, 'runs/in_use/') == before


EXPECTED = {
    'workdir': r'error: the bucket of workdir gs://no-such-bucket/run does not exist',
    'data_dir': r'error: cannot read config.data.data_dir gs://no-such-bucket/tfds: its bucket '
                r'does not exist',
    # Whichever path is checked first (the data), named with the store's answer.
    'no_token': r'error: cannot (reach|read|write to) \S+ gs://%s/\S+ \(HTTP 401: Anonymous '
                r'caller' % BUCKET,
}


@pytest.mark.parametrize('where', ['workdir', 'data_dir', 'no_token'])
def test_a_bucket_or_credentials_that_are_not_there_stop_before_any_training(
    object_store, gs_data, tmp_path, tiny_config, config_file, where):
  images, data_dir = gs_data
  overrides = {'data.data_dir': 'gs://no-such-bucket/tfds' if where == 'data_dir' else data_dir}
  config = config_file(tmp_path / 'tiny.py', tiny_config(images, **RUN, **overrides))
  workdir = {'workdir': 'gs://no-such-bucket/run', 'no_token': f'gs://{BUCKET}/runs/anonymous'
             }.get(where, f'gs://{BUCKET}/runs/bad_data')
  env = _env(object_store)
  if where == 'no_token':
    object_store.faults(require_token=True)
    env.pop('GOOGLE_AUTH_TOKEN_FOR_TESTING')
  try:
    done = subprocess.run([sys.executable, '-m', 'alexnet_jax.main', f'--config={config}',
                           f'--workdir={workdir}'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  finally:
    object_store.faults(require_token=False)
  assert done.returncode == 1, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  assert re.match(EXPECTED[where], last), done.stderr[-3000:]
  assert 'Traceback' not in done.stderr and 'step 1/' not in done.stderr


def test_a_data_path_on_a_store_tensorflow_cannot_read_is_one_line_naming_it(tiny_config, folder):
  from alexnet_jax.data import checks, spec  # pylint: disable=g-import-not-at-top
  config = tiny_config(folder, **{'data.data_dir': 's3://bucket/tfds'})
  with pytest.raises(ValueError) as error:
    checks.check_data_paths(spec.DataSpec.from_config(config.data))
  message = str(error.value)
  assert message.startswith('cannot read config.data.data_dir s3://bucket/tfds (')
  assert "File system scheme 's3' not implemented" in message and '\n' not in message

"""What a run directory survives (README): a second run on it, a changed config, a damaged
newest checkpoint, a full disk, bad values caught before it exists, and a finished run run
again. End to end on the tiny dataset of tests/conftest.py."""

import asyncio
import json
import logging
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import alexnet_jax
from alexnet_jax import rundir, train
from alexnet_jax.data import checks, sources
from alexnet_jax.data.spec import DataSpec
from alexnet_jax.rundir import checkpoints, logs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Every step logged (the run's losses can be compared step by step); one view, to be quick.
RUN = {'eval_views': ('center',), 'log_every_steps': 1}


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def snapshot(workdir):
  """Every file under `workdir` with its size and modification time."""
  return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in
                pathlib.Path(workdir).rglob('*'))


def main(*args, **kwargs):
  return subprocess.run([sys.executable, '-m', 'alexnet_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope='module')
def whole(folder, tmp_path_factory, tiny_config, train_config):
  """An uninterrupted, finished tiny run: 12 steps, checkpoints at 4, 8 and 12."""
  workdir = str(tmp_path_factory.mktemp('whole') / 'run')
  summary = train_config(tiny_config(folder, **RUN), workdir)
  assert summary['step'] == 12
  return workdir


def copy_of(whole, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(whole, workdir)
  return workdir


HOLDER = '''
import sys
from alexnet_jax import rundir
lock = rundir.Lock(sys.argv[1])
lock.acquire()
print('held', flush=True)
sys.stdin.read()  # Until the test closes stdin, or kills this process.
'''


def test_a_second_run_on_a_workdir_stops_at_once_and_writes_nothing(folder, whole, tmp_path,
                                                                     tiny_config, config_file):
  workdir = copy_of(whole, tmp_path)
  holder = subprocess.Popen([sys.executable, '-c', HOLDER, workdir], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = snapshot(workdir)
    # The same command as the run in progress (one more epoch, so not finished).
    second = main(f'--config={config_file(tmp_path / "tiny.py", tiny_config(folder, **RUN))}',
                  f'--workdir={workdir}', '--config.num_epochs=3')
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith('error')]
    assert errors == [second.stderr.strip().splitlines()[-1]], second.stderr[-3000:]
    assert errors[0].startswith(f'error: workdir {workdir} is in use by PID {holder.pid} on host '
                                f'{socket.gethostname()}'), errors
    assert 'Traceback' not in second.stderr
    assert snapshot(workdir) == before  # Not a byte written, not a file touched.
  finally:
    holder.kill()  # SIGKILL: no cleanup runs in the holder; the kernel drops its lock.
    holder.wait()
  assert holder.returncode == -signal.SIGKILL
  with rundir.Lock(workdir) as lock:  # Free again after kill -9.
    with pytest.raises(rundir.WorkdirInUse, match=f'PID {os.getpid()} on host'):
      rundir.Lock(workdir).acquire()  # flock conflicts between two opens of one process too.
    assert json.loads(open(lock.path).read())['pid'] == os.getpid()


@pytest.mark.parametrize('override,fields', [
    ({'batch_size': 2}, ['batch_size 4 -> 2']),
    ({'model.lrn': False, 'model.activation': 'tanh'},
     ["model.activation 'relu' -> 'tanh'", 'model.lrn True -> False']),
    ({'optim.schedule': 'plateau'}, ["optim.schedule 'step' -> 'plateau'"]),
    ({'seed': 1, 'data.flip': False}, ['data.flip True -> False', 'seed 0 -> 1']),
])
def test_resuming_with_another_config_stops_and_lists_the_fields(folder, whole, tmp_path,
                                                                 tiny_config, override, fields,
                                                                 train_config):
  workdir = copy_of(whole, tmp_path)
  before = snapshot(workdir)
  config = tiny_config(folder, **RUN, num_epochs=3, **override)
  with pytest.raises(ValueError) as info:
    train_config(config, workdir)
  message = str(info.value)
  assert '\n' not in message and 'delete' not in message
  assert ', '.join(fields) in message, message
  assert f'--config.resume_overrides={",".join(f.split()[0] for f in fields)}' in message
  assert snapshot(workdir) == before


def test_resume_overrides_and_extending_changes_go_on(folder, whole, tmp_path, tiny_config, caplog,
                                                      train_config):
  workdir = copy_of(whole, tmp_path)
  config = tiny_config(folder, **RUN, num_epochs=3, keep_checkpoints=5,
                       **{'optim.learning_rate': 0.0005, 'resume_overrides': 'optim.learning_rate'})
  with caplog.at_level(logging.INFO):
    summary = train_config(config, workdir)
  assert summary['step'] == 18
  messages = [r.getMessage() for r in caplog.records]
  assert [m for m in messages if 'optim.learning_rate 0.001 -> 0.0005' in m
          and 'resume_overrides' in m]
  assert [m for m in messages if 'num_epochs 2 -> 3' in m and 'keep_checkpoints 3 -> 5' in m]
  rows = [r for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl')) if 'loss' in r]
  assert [r['step'] for r in rows] == list(range(1, 19))
  assert [r['learning_rate'] for r in rows[12:]] == pytest.approx([0.0005] * 6)
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)  # The run's config from here on: the next resume compares with it.
  assert (saved['optim']['learning_rate'], saved['num_epochs']) == (0.0005, 3)


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(folder, whole, tmp_path,
                                                                 tiny_config, caplog,
                                                                 train_config):
  parts = str(tmp_path / 'parts')
  train_config(tiny_config(folder, max_steps=8, **RUN), parts)
  # Half of step 8's largest data file is lost, as a copy cut short would lose it.
  data = [p for p in (tmp_path / 'parts' / 'checkpoints' / '8').rglob('*')
          if p.is_file() and p.parent.name == 'd']
  bad = max(data, key=lambda p: p.stat().st_size)
  bad.write_bytes(bad.read_bytes()[:bad.stat().st_size // 2])
  with caplog.at_level(logging.WARNING):
    summary = train_config(tiny_config(folder, **RUN), parts)
  assert summary['step'] == 12
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  skipped = [w for w in warnings if w.startswith('Skipping checkpoint step 8')]
  assert len(skipped) == 1 and bad.name in skipped[0], warnings
  assert (tmp_path / 'parts' / 'checkpoints.damaged' / '8').is_dir()  # Kept aside.
  # Steps 5-8 were trained again from step 4: the same parameters as the uninterrupted run.
  a, b = alexnet_jax.load_params(whole), alexnet_jax.load_params(parts)
  for name in a:
    for leaf in a[name]:
      np.testing.assert_allclose(b[name][leaf], a[name][leaf], rtol=1e-5, atol=1e-7)
  rows = {run: [(r['step'], r['loss']) for r in read_jsonl(os.path.join(run, 'metrics.jsonl'))
                if 'loss' in r] for run in (whole, parts)}
  assert [s for s, _ in rows[parts]] == list(range(1, 13))
  # The summary's first loss is the run's (step 1, from metrics.jsonl), not this session's.
  assert summary['first_loss'] == rows[parts][0][1]
  assert summary['first_loss'] == pytest.approx(rows[whole][0][1], rel=1e-5)


def test_a_finished_run_run_again_is_left_as_it_is(folder, whole, tmp_path, tiny_config,
                                                   train_config):
  workdir = copy_of(whole, tmp_path)
  before = snapshot(workdir)
  rows = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  summary = train_config(tiny_config(folder, **RUN), workdir)
  assert summary['finished'] and summary['step'] == 12
  with open(os.path.join(workdir, 'eval.json')) as f:
    assert summary['eval']['center'] == json.load(f)['center']
  assert summary['first_loss'] == rows[0]['loss']
  assert summary['last_loss'] == [r for r in rows if 'loss' in r][-1]['loss']
  assert [s for s in snapshot(workdir) if not s[0].endswith(rundir.files.LOCK_FILE)] == [
      s for s in before if not s[0].endswith(rundir.files.LOCK_FILE)]
  # Asked to: evaluated once more, one new row.
  again = train_config(tiny_config(folder, reevaluate=True, **RUN), workdir)
  assert not again.get('finished') and again['eval']['center'] == summary['eval']['center']
  new_rows = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))[len(rows):]
  assert [sorted(r) for r in new_rows] == [['step', 'val_center_top1_error',
                                            'val_center_top5_error']]


def _small_filesystem(path, size: str):
  """A tmpfs of `size` at `path` (root), or None where mounting is not permitted."""
  path.mkdir()
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                        capture_output=True)
  return done.returncode == 0


def _limit_file_size():
  # Without a mount: writes beyond 64 KiB fail (EFBIG), through the same code path.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))


def test_a_full_disk_stops_training_with_one_line_and_the_next_start_cleans_up(
    folder, tmp_path, tiny_config, caplog, config_file, train_config):
  small = tmp_path / 'small'
  mounted = _small_filesystem(small, '800k')  # Room for logs, not for a 1.8 MB checkpoint.
  try:
    workdir = small / 'run'
    config = tiny_config(folder, **RUN, max_steps=6)
    done = main(f'--config={config_file(tmp_path / "tiny.py", config)}', f'--workdir={workdir}',
                preexec_fn=None if mounted else _limit_file_size)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    cause = 'No space left on device' if mounted else 'File too large'
    assert last.startswith(f'error: saving step 4 to {workdir}/checkpoints/4 failed: {cause}')
    assert 'run the same command' in last and 'MiB' in last
    # One line: no traceback from orbax's threads or asyncio on the way.
    assert 'Traceback' not in done.stderr and 'Event loop is closed' not in done.stderr
    assert [line for line in done.stderr.splitlines() if cause in line] == [last]
    rows = read_jsonl(workdir / 'metrics.jsonl')  # Stopped within a step of the failure.
    assert rows[-1]['step'] in (4, 5, 6)
    if mounted:
      # Refused before writing (the checkpoint's size against the free space): nothing left.
      assert os.listdir(workdir / 'checkpoints') == []
      # What a save cut short (kill -9, a disk filled by another program) leaves behind.
      leftover = workdir / 'checkpoints' / f'4{checkpoints.UNFINISHED}-1700000000'
      (leftover / 'state').mkdir(parents=True)
      (leftover / 'state' / 'partial').write_bytes(b'x' * 1000)
      subprocess.run(['mount', '-o', 'remount,size=64m', str(small)], check=True)
      with caplog.at_level(logging.INFO):
        summary = train_config(config, str(workdir))
      assert summary['step'] == 6
      removed = [r.getMessage() for r in caplog.records if 'unfinished save' in r.getMessage()]
      assert len(removed) == 1 and leftover.name in removed[0]
      assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '6']
    else:
      left = [p.name for p in (workdir / 'checkpoints').iterdir()]
      assert left and all(checkpoints.UNFINISHED in n for n in left)
  finally:
    if mounted:
      subprocess.run(['umount', str(small)], check=False)


MID_SAVE = '''
import sys
import jax
from alexnet_jax.rundir import checkpoints
# The disk fills after the up-front check (another program writing), so the save fails part
# way, in orbax's threads: 33 arrays of 120 KB, 4 MB in all, on an 800 KiB filesystem.
checkpoints._free_bytes = lambda directory: None
state = {'params': {f'w{i}': jax.random.normal(jax.random.key(i), (30000,)) for i in range(16)},
         'momentum': {f'w{i}': jax.random.normal(jax.random.key(99 - i),
                                                 (30000,)) for i in range(16)},
         'step': jax.numpy.int32(4)}
ckpt = checkpoints.Checkpoints(sys.argv[1], every=1)
try:
  ckpt.save(4, state, {'step': 4})
  ckpt.wait_until_finished()
except checkpoints.CheckpointSaveError as e:
  print(f'error: {e}', file=sys.stderr)
  sys.exit(1)  # As main does: no close, so late callbacks may come at exit.
'''


def test_a_disk_that_fills_during_a_save_gives_one_line_and_no_asyncio_tracebacks(tmp_path):
  small = tmp_path / 'small'
  mounted = _small_filesystem(small, '800k')
  try:
    for attempt in range(3):  # The late callbacks race orbax's loop closing: try it 3 times.
      workdir = small / f'run{attempt}'
      done = subprocess.run([sys.executable, '-c', MID_SAVE, str(workdir)], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=None if mounted else _limit_file_size)
      assert done.returncode == 1, done.stderr[-2000:]
      cause = 'No space left on device' if mounted else 'File too large'
      last = done.stderr.strip().splitlines()[-1]
      assert last.startswith(f'error: saving step 4 to {workdir}/checkpoints/4 failed: {cause}')
      assert 'Event loop is closed' not in done.stderr and 'Traceback' not in done.stderr
      shutil.rmtree(workdir)
  finally:
    if mounted:
      subprocess.run(['umount', str(small)], check=False)


def test_only_the_closed_loop_callbacks_of_a_failed_save_are_taken_from_stderr(monkeypatch):
  passed = []
  monkeypatch.setattr(sys, 'unraisablehook', passed.append)
  hook = logs.OrbaxEchoes()
  hook.attach()
  try:
    loop = asyncio.new_event_loop()
    loop.close()
    for error in (lambda: loop.call_soon_threadsafe(print),  # A tensorstore callback's error.
                  lambda: loop.call_soon(print),  # The same error, called by Python code: kept.
                  lambda: 1 / 0):
      try:
        error()
      except Exception as e:  # pylint: disable=broad-except
        # What Python passes the hook, with the traceback from the call on (no caller).
        sys.unraisablehook(types.SimpleNamespace(
            exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__.tb_next.tb_next,
            err_msg=None, object=None))
  finally:
    hook.detach()
  assert [str(u.exc_value) for u in passed] == ['Event loop is closed', 'division by zero']
  assert sys.unraisablehook == passed.append


def test_only_orphaned_tasks_of_a_failed_orbax_read_are_taken_from_the_asyncio_log():
  def record(error):
    try:
      raise error
    except ValueError as e:  # With a traceback, as asyncio logs it.
      return logging.LogRecord('asyncio', logging.ERROR, 'base_events.py', 1,
                               'Task exception was never retrieved\nfuture: <Task finished>',
                               None, (type(e), e, e.__traceback__))

  hook = logs.OrbaxEchoes()
  tensorstore = ValueError('DATA_LOSS: Error opening "zarr" driver [tensorstore_spec=\'{}\']')
  assert not hook.filter(record(tensorstore))  # Dropped (kept at DEBUG with --verbosity=1).
  assert hook.filter(record(ValueError('a task of the user\'s own')))
  other = logging.LogRecord('asyncio', logging.ERROR, 'x.py', 1, 'Unclosed client session',
                            None, None)
  assert hook.filter(other)


@pytest.mark.parametrize('override,message', [
    ({'max_steps': 0}, 'config.max_steps must be a positive number of steps, or -1'),
    ({'max_steps': -5}, 'got -5'),
    ({'data.lighting': 'bogus'}, "config.data.lighting must be one of ('paper', 'original', "
                                 "'none'); got 'bogus'"),
    ({'batch_size': 100_000}, 'larger than the training split (24 images'),
    ({'data.stored_size': 100}, 'set --config.data.stored_size to at least 224'),
])
def test_bad_values_stop_before_the_workdir_exists(folder, tmp_path, tiny_config, override,
                                                   message, train_config):
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError) as info:
    train_config(tiny_config(folder, **override), str(workdir))
  assert message in str(info.value) and '\n' not in str(info.value)
  assert not workdir.exists()


def test_a_truncated_statistics_file_is_named(folder, tmp_path, tiny_config, train_config):
  config = tiny_config(folder)
  checks.ensure_statistics(DataSpec.from_config(config.data))  # Computed (or already there).
  good = open(sources.stats_path(DataSpec.from_config(config.data)), 'rb').read()
  bad = tmp_path / 'stats.npz'
  bad.write_bytes(good[:len(good) // 2])
  config.data.stats_file = str(bad)
  with pytest.raises(ValueError) as info:
    train_config(config, str(tmp_path / 'run'))
  assert str(info.value).startswith(f'the dataset statistics file {bad} is damaged')
  assert not (tmp_path / 'run').exists()


def test_statistics_that_cannot_be_written_are_one_line_and_leave_no_part(folder, tmp_path,
                                                                          tiny_config, monkeypatch,
                                                                          train_config):
  small = tmp_path / 'small'
  mounted = _small_filesystem(small, '8k')  # Less than the tiny run's mean image.
  try:
    config = tiny_config(folder)
    config.data.stats_file = str(small / 'stats.npz')
    if not mounted:  # Without root: the write fails as a full disk fails it.
      def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, 'write failed; No space left on device')
      monkeypatch.setattr(tf.io.gfile.GFile, 'write', full)
    with pytest.raises(ValueError) as info:
      train_config(config, str(tmp_path / 'run'))
    message = str(info.value)
    assert message.startswith('cannot write the statistics (') and '\n' not in message
    assert f'to {small / "stats.npz"}: ' in message and 'data_dir' in message
    assert 'No space left on device' in message or 'File too large' in message
    assert os.listdir(small) == []  # No part-written file is left.
    assert not (tmp_path / 'run').exists()
  finally:
    if mounted:
      subprocess.run(['umount', str(small)], check=False)


def test_divergence_before_any_checkpoint_says_so(folder, tmp_path, tiny_config, train_config):
  config = tiny_config(folder, log_every_steps=1, checkpoint_every_steps=100,
                       **{'optim.learning_rate': 1e30})
  with pytest.raises(train.TrainingDiverged) as info:
    train_config(config, str(tmp_path / 'run'))
  assert 'No checkpoint had been saved yet' in str(info.value)
  assert 'None' not in str(info.value)


def test_a_config_is_compared_only_when_there_is_a_checkpoint_to_continue(folder, tmp_path,
                                                                          tiny_config):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  rundir.write_config(str(workdir), tiny_config(folder).to_json())
  changed = tiny_config(folder, batch_size=2).to_json()
  rundir.check_resume(str(workdir), changed)  # Stopped before its first checkpoint: anew.
  (workdir / 'checkpoints' / '4').mkdir(parents=True)
  with pytest.raises(ValueError, match='batch_size 4 -> 2'):
    rundir.check_resume(str(workdir), changed)
  overridden = tiny_config(folder, batch_size=2, resume_overrides='batch_size')
  rundir.check_resume(str(workdir), overridden.to_json(), overridden.resume_overrides)

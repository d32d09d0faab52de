"""The training loop, checkpoints and evaluation, end to end on a tiny generated dataset."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import evaluate, optim, parallel, train
from alexnet_jax.config import RunSpec
from alexnet_jax.data import pipeline
from alexnet_jax.data.spec import DataSpec
from alexnet_jax.rundir import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_end_to_end(folder, tmp_path, tiny_config, train_config):
  workdir = str(tmp_path / 'run')
  config = tiny_config(folder, **{'mesh.data': 2})  # Two fake devices on the data axis.
  summary = train_config(config, workdir)
  assert summary['step'] == 12
  assert summary['last_loss'] < summary['first_loss']
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_records = [r for r in records if 'loss' in r]
  assert [r['step'] for r in train_records] == [6, 12]
  assert all(r['learning_rate'] == pytest.approx(0.001) for r in train_records)
  assert any('val_center_top1_error' in r for r in records)
  assert os.path.isdir(os.path.join(workdir, 'tensorboard'))
  with open(os.path.join(workdir, 'eval.json')) as f:
    result = json.load(f)
  assert result['step'] == 12
  for views in ('center', 'ten'):
    assert result[views]['examples'] == 14
    assert 0.0 <= result[views]['top5_error'] <= result[views]['top1_error'] <= 1.0
  # A two-class problem: the top-5 error is zero by definition.
  assert result['center']['top5_error'] == 0.0
  params = alexnet_jax.load_params(workdir)
  shapes = alexnet_jax.param_shapes(config.model)
  assert {n: {k: v.shape for k, v in layer.items()} for n, layer in params.items()} == shapes
  # eval.json agrees with the loaded params run through the one-device `apply` on the
  # pipeline's centre crops, counted in NumPy.
  batch = next(pipeline.eval_batches(DataSpec.from_config(config.data), global_batch_size=14,
                                     views='center'))
  logits = np.asarray(alexnet_jax.apply(params, batch['images'][:, 0], config.model))
  np.testing.assert_allclose(result['center']['top1_error'],
                             np.mean(np.argmax(logits, -1) != batch['labels']), atol=1e-6)


def test_evaluation_counts_every_example_once(folder, tmp_path, tiny_config, train_config):
  config = tiny_config(folder, max_steps=2)
  workdir = str(tmp_path / 'run')
  train_config(config, workdir)
  params = alexnet_jax.load_params(workdir)
  batch = next(pipeline.eval_batches(DataSpec.from_config(config.data), global_batch_size=14,
                                     views='ten'))
  probs = np.mean([jax.nn.softmax(alexnet_jax.apply(params, batch['images'][:, v], config.model))
                   for v in range(10)], axis=0)
  expected = np.mean(np.argmax(probs, -1) != batch['labels'])
  for batch_size, data in ((1, 1), (3, 1), (4, 2), (14, 2), (16, 4)):
    config.eval_batch_size = batch_size
    config.mesh.data = data
    result = evaluate.evaluate_checkpoint(RunSpec.from_config(config), workdir)
    assert result['ten']['examples'] == 14, batch_size
    assert result['ten']['top1_error'] == pytest.approx(expected, abs=1e-6), batch_size


def test_interrupted_and_resumed_equals_uninterrupted(folder, tmp_path, tiny_config, train_config):
  every_step = {'eval_views': ('center',), 'log_every_steps': 1}
  whole = str(tmp_path / 'whole')
  train_config(tiny_config(folder, **every_step), whole)
  parts = str(tmp_path / 'parts')
  # A crash after step 5 was logged but before it was saved (mid-epoch, after a checkpoint
  # at 4, with the rng, momentum and data position in flight): stopped at step 5, then its
  # checkpoint removed. Then the same command again.
  train_config(tiny_config(folder, max_steps=5, **every_step), parts)
  shutil.rmtree(os.path.join(parts, 'checkpoints', '5'))
  resumed = train_config(tiny_config(folder, **every_step), parts)
  assert resumed['step'] == 12
  # metrics.jsonl lists every step once, and the same numbers as the uninterrupted run's.
  rows = {run: read_jsonl(os.path.join(run, 'metrics.jsonl')) for run in (whole, parts)}
  losses = {run: [(r['step'], r['loss']) for r in rows[run] if 'loss' in r] for run in rows}
  assert [step for step, _ in losses[parts]] == list(range(1, 13))
  np.testing.assert_allclose([l for _, l in losses[parts]], [l for _, l in losses[whole]],
                             rtol=1e-5)
  val_steps = [r['step'] for r in rows[parts] if 'val_center_top1_error' in r]
  assert val_steps == [6, 12]
  a, b = alexnet_jax.load_params(whole), alexnet_jax.load_params(parts)
  for name in a:
    for leaf in a[name]:
      np.testing.assert_allclose(b[name][leaf], a[name][leaf], rtol=1e-5, atol=1e-7)
  # The parameters did move, so the comparison means something.
  init = alexnet_jax.init_params(jax.random.fold_in(jax.random.key(0), 0),
                                tiny_config(folder).model)
  assert np.abs(a['fc8']['kernel'] - np.asarray(init['fc8']['kernel'])).max() > 1e-4


def test_sigterm_sets_the_preemption_flag():
  before = signal.getsignal(signal.SIGTERM)
  with train._StopFlags() as preemption:
    # Bound methods compare equal (==), but each access makes a new object (is).
    assert signal.getsignal(signal.SIGTERM) == preemption._handle
    assert not preemption.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.requested
  assert signal.getsignal(signal.SIGTERM) == before  # The previous handler is back.


@pytest.mark.parametrize('override,message', [
    ({'optim.learning_rate': -0.1}, 'learning_rate'),
    ({'batch_size': 3, 'mesh.data': 2}, 'not divisible by the data axis'),
    ({'mesh.model': 3}, 'must be 1 or 2'),
    ({'model.num_classes': 5}, 'set --config.model.num_classes=2'),
    ({'data.folder': '/nonexistent/images'}, 'config.data.folder'),
])
def test_bad_input_keeps_what_is_saved(folder, tmp_path, override, message, tiny_config,
                                       train_config):
  workdir = tmp_path / 'run'
  os.makedirs(workdir / 'checkpoints' / '7')
  (workdir / 'metrics.jsonl').write_text('{"step": 7}\n')
  before = sorted(str(p) for p in workdir.rglob('*'))
  with pytest.raises(ValueError, match=message):
    train_config(tiny_config(folder, **override), str(workdir))
  assert sorted(str(p) for p in workdir.rglob('*')) == before
  assert (workdir / 'metrics.jsonl').read_text() == '{"step": 7}\n'


def test_unwritable_workdir(folder, tmp_path, tiny_config, train_config):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  with pytest.raises(ValueError, match='choose another --workdir'):
    train_config(tiny_config(folder), str(blocker / 'run'))


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'alexnet_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_command_line_errors_are_one_line(tmp_path):
  # A misspelled field and a bad value: non-zero exit, a one-line message, no traceback.
  unknown = _main('--config=configs/demo.py', f'--workdir={tmp_path}', '--config.num_epochs=3',
                  '--config.batch_sise=8')
  assert unknown.returncode != 0
  # The misspelled argument alone (not every argument), and the field meant, on one line
  # with no literal \n or quotes from the library's message.
  # Native libraries may log before any Python runs (a CUDA plugin installed beside jax says
  # it finds no GPU): those lines are not the program's message.
  native = ('WARNING: All log messages before absl::InitializeLog()', 'I0000 ')
  message = [line for line in unknown.stderr.strip().splitlines() if not line.startswith(native)]
  assert '\n'.join(message) == (
      'error: cannot apply --config.batch_sise=8 (no field --config.batch_sise; did you mean '
      '--config.batch_size?): fields and their types are in alexnet_jax/config.py and '
      'the specs it names (model.Spec, data.spec.DataSpec, ...).'), unknown.stderr
  negative = _main('--config=configs/demo.py', f'--workdir={tmp_path}',
                   '--config.optim.learning_rate=-1', f'--config.data.data_dir={tmp_path}')
  assert negative.returncode == 1
  last = negative.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'learning_rate' in last, negative.stderr
  assert 'Traceback' not in negative.stderr
  assert os.listdir(tmp_path) == []  # Nothing written for a run that cannot start.


def test_divergence_stops_and_keeps_the_last_good_checkpoint(folder, tmp_path, tiny_config,
                                                             train_config):
  workdir = str(tmp_path / 'run')
  train_config(tiny_config(folder, max_steps=4, eval_views=('center',)), workdir)
  good = alexnet_jax.load_params(workdir)
  # A learning rate no network survives: parameters overflow to Inf/NaN within a step.
  # The resume changes the learning rate on purpose (otherwise refused: tests/test_rundir.py).
  diverging = {'optim.learning_rate': 1e30, 'resume_overrides': 'optim.learning_rate'}
  with pytest.raises(train.TrainingDiverged, match='last good checkpoint \\(step 4\\)'):
    train_config(tiny_config(folder, **diverging), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4']
  kept = alexnet_jax.load_params(workdir)
  for name in good:
    np.testing.assert_array_equal(kept[name]['kernel'], good[name]['kernel'])


def test_eval_of_a_checkpoint_with_nan_params_is_a_clear_error(folder, tmp_path, tiny_config):
  config = tiny_config(folder)
  workdir = str(tmp_path / 'run')
  run = RunSpec.from_config(config)
  layout = parallel.Layout.for_run(run)
  with jax.set_mesh(layout.mesh):
    state = train.init_state(run.seed, layout, optim.make_optimizer(run.optim, 6).tx)
  params = jax.tree.map(np.array, state['params'])
  params['fc8']['bias'][1] = np.nan  # As a diverged run, or a damaged copy, would hold.
  with checkpoints.Checkpoints(workdir, every=1) as ckpt:
    ckpt.save(4, {**state, 'params': params}, {}, force=True)
  with pytest.raises(ValueError) as info:
    evaluate.evaluate_checkpoint(run, workdir)
  message = str(info.value)
  assert '\n' not in message
  assert os.path.join(workdir, 'checkpoints', '4') in message and 'fc8' in message
  assert 'learning_rate' in message
  assert not os.path.exists(os.path.join(workdir, 'eval.json'))


def test_the_summary_puts_each_chance_beside_its_own_error(capsys):
  """With 10 classes a random guess is wrong 9 times in 10 (top-1) and 5 in 10 (top-5)."""
  from alexnet_jax import main  # pylint: disable=g-import-not-at-top
  main.print_summary({'eval': {'center': {'top1_error': 0.2, 'top5_error': 0.022,
                                          'examples': 500}}}, num_classes=10)
  assert capsys.readouterr().out.strip() == (
      'Held-out (center view): top-1 error 20.00% (accuracy 80.00%, chance 90.0%), top-5 error '
      '2.20% (chance 50.0%), 500 images.')

"""Multi-process training through launch/local_multiprocess.sh: 2 processes x 2 fake CPU
devices against 1 x 4 and 1 x 1, an interrupted run resumed, and a pre-emption that
reaches one process only.

Every run is a subprocess (this test process never joins a jax.distributed group).
The data make the layouts comparable: each process shuffles and augments its own share
of the split, so the examples of a global batch depend on the process count; with the
whole (8-image) split as the batch, no crop offsets, reflections, lighting noise or
dropout, every layout computes the same update, up to float32 summation order.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import alexnet_jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, 'launch', 'local_multiprocess.sh')
TIMEOUT = 300

CONFIG = '''
from configs import default

def get_config():
  config = default.get_config()
  config.data.source = 'folder'
  config.data.folder = {folder!r}
  config.data.data_dir = {data_dir!r}
  config.data.stored_size = 224  # = the crop: no random offsets.
  config.data.flip = False
  config.data.lighting = 'none'
  config.data.shuffle_buffer = 8
  config.model.num_classes = 2
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (64, 64)
  config.model.init = 'he'
  config.model.dropout_rate = 0.0
  config.optim.learning_rate = 0.001
  config.batch_size = 8  # The whole split: one step per epoch.
  config.eval_batch_size = 4
  config.num_epochs = 6
  config.log_every_steps = 1
  config.checkpoint_every_steps = 3
  config.eval_every_epochs = 1000
  config.eval_views = ('center',)
  config.mesh.data = -1
  config.mesh.model = 1
  return config
'''


@pytest.fixture(scope='module')
def config_file(tmp_path_factory, write_dark_and_bright):
  root = tmp_path_factory.mktemp('mp')
  write_dark_and_bright(root / 'images', {'train': 4, 'val': 2})
  path = root / 'tiny.py'
  path.write_text(CONFIG.format(folder=str(root / 'images'), data_dir=str(root / 'data_dir')))
  return str(path)


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHON=sys.executable,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


def run_local(processes, devices, config_file, workdir, *flags, env=None):
  args = [f'--config={config_file}', f'--workdir={workdir}', *flags]
  if processes == 1:
    command = [sys.executable, '-m', 'alexnet_jax.main', *args]
  else:
    command = ['bash', LAUNCHER, str(processes), str(devices), *args]
  result = subprocess.run(command, cwd=REPO, env=dict(_env(devices), **(env or {})),
                          capture_output=True, text=True, timeout=TIMEOUT)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout + result.stderr


def assert_same_params(a, b):
  """Equal up to float32 summation order, which six updates amplify: the tolerance is
  relative to each tensor's largest entry (the updates themselves are ~1e-2 of it)."""
  for name in a:
    for leaf in a[name]:
      np.testing.assert_allclose(b[name][leaf], a[name][leaf], rtol=0,
                                 atol=1e-4 * np.abs(a[name][leaf]).max() + 1e-7,
                                 err_msg=f'{name}.{leaf}')


@pytest.fixture(scope='module')
def two_by_two(config_file, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('2x2') / 'run')
  log = run_local(2, 2, config_file, workdir)
  return workdir, log


def test_two_processes_train_like_one(config_file, two_by_two, tmp_path):
  workdir, log = two_by_two
  assert '[p0] ' in log and '[p1] ' in log
  # The training split's mean image was missing: process 0 alone computed it, and process
  # 1 read the file process 0 wrote (a second pass would log the same line).
  computing = [line for line in log.splitlines() if 'Computing the mean image' in line]
  assert len(computing) == 1 and computing[0].startswith('[p0] '), computing
  assert 'Process 1 of 2: 2 local devices of 4.' in log
  # Only process 0 writes the logs and results.
  assert os.path.exists(os.path.join(workdir, 'metrics.jsonl'))
  assert os.path.exists(os.path.join(workdir, 'eval.json'))
  assert log.count('Held-out (center view)') == 1
  multi = alexnet_jax.load_params(workdir)
  init = alexnet_jax.init_params(jax.random.fold_in(jax.random.key(0), 0),
                                 _model_config(config_file))
  # Training moved the parameters, so agreeing below means something.
  assert np.abs(multi['fc8']['kernel'] - np.asarray(init['fc8']['kernel'])).max() > 1e-3
  for devices in (4, 1):
    single = str(tmp_path / f'1x{devices}')
    assert 'Computing the mean image' not in run_local(1, devices, config_file, single)
    assert_same_params(alexnet_jax.load_params(single), multi)


def test_two_processes_resume(config_file, two_by_two, tmp_path):
  # The whole run's workdir as it was at step 3: its checkpoint there, none after, no results.
  workdir = str(tmp_path / 'parts')
  shutil.copytree(two_by_two[0], workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '6'))
  os.remove(os.path.join(workdir, 'eval.json'))
  log = run_local(2, 2, config_file, workdir)
  assert 'Resumed from' in log and 'at step 3' in log
  assert_same_params(alexnet_jax.load_params(two_by_two[0]), alexnet_jax.load_params(workdir))


def test_two_processes_write_one_gs_run(config_file, two_by_two, object_store, on_object_store):
  """The same 2 x 2 run with its workdir on the object store: the same parameters, and the
  run's files (process 0's) and checkpoints (both processes') in the bucket."""
  bucket = object_store.make_bucket('alexnet-jax-multiprocess')
  log = run_local(2, 2, config_file, f'{bucket}/run', env=object_store.env)
  assert '[p0] ' in log and '[p1] ' in log and log.count('Held-out (center view)') == 1
  local = alexnet_jax.load_params(two_by_two[0])
  remote = alexnet_jax.load_params(f'{bucket}/run')
  for name in local:
    for leaf in local[name]:  # The same computation on the same layout: exactly.
      np.testing.assert_array_equal(remote[name][leaf], local[name][leaf], err_msg=f'{name}.{leaf}')
  names = object_store.objects(bucket[len('gs://'):], 'run/')
  assert {'run/config.json', 'run/metrics.jsonl', 'run/eval.json'} <= names.keys()
  assert {f'run/checkpoints/{s}/commit_success.txt' for s in (3, 6)} <= names.keys()
  assert 'run/run.lock' not in names  # Process 0 held it, and released it at the end.


def test_a_missing_manual_download_is_one_line_from_process_0_alone(config_file, tmp_path):
  """imagenet2012 without its tars: process 0, the only one that builds, says what is
  missing; process 1, waiting for the build, stops with a line pointing to it."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  args = [f'--config={config_file}', f'--workdir={tmp_path / "run"}',
          '--config.data.source=imagenet2012', f'--config.data.manual_dir={manual}',
          f'--config.data.data_dir={tmp_path / "tfds"}', '--config.model.num_classes=1000']
  done = subprocess.run(['bash', LAUNCHER, '2', '2', *args], cwd=REPO, env=_env(2),
                        capture_output=True, text=True, timeout=TIMEOUT)
  log = done.stdout + done.stderr
  assert done.returncode == 1, log[-3000:]
  needs = [line for line in log.splitlines() if 'imagenet2012 needs' in line]
  assert needs == [f'[p0] error: imagenet2012 needs ILSVRC2012_img_train.tar and '
                   f'ILSVRC2012_img_val.tar (from image-net.org) in {manual}; missing '
                   'ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar. Put them there or point '
                   'config.data.manual_dir at the folder that holds them.'], log[-3000:]
  assert ("[p1] error: process 0 could not build the dataset 'imagenet2012' (its error line "
          'says why).') in log.splitlines(), log[-3000:]
  assert 'Traceback' not in log and not (tmp_path / 'run').exists()


def test_sigterm_to_one_process_saves_on_all(config_file, tmp_path):
  """Process 1 alone gets SIGTERM; both must save the same step and exit cleanly."""
  workdir = str(tmp_path / 'preempted')
  command = ['bash', LAUNCHER, '2', '2', f'--config={config_file}', f'--workdir={workdir}',
             '--config.num_epochs=100000', '--config.checkpoint_every_steps=100000']
  launcher = subprocess.Popen(command, cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
  lines, deadline = [], time.monotonic() + TIMEOUT
  try:
    for line in launcher.stdout:
      lines.append(line)
      if '[p1] ' in line and 'step 2/' in line:  # Training is under way on both.
        pid = subprocess.run(['pgrep', '-f', f'process_id=1 --config={config_file}'],
                             capture_output=True, text=True).stdout.split()
        assert len(pid) == 1, pid
        os.kill(int(pid[0]), signal.SIGTERM)
        break
      assert time.monotonic() < deadline, ''.join(lines[-50:])
    out, _ = launcher.communicate(timeout=TIMEOUT)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  log = ''.join(lines) + out
  assert launcher.returncode == 0, log[-4000:]
  steps = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert len(steps) == 1 and int(steps[0]) >= 2, steps
  assert f'[p0] Pre-empted at step {steps[0]}' in log, log[-4000:]


def _model_config(config_file):
  import importlib.util
  spec = importlib.util.spec_from_file_location('tiny_config', config_file)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, REPO)
  spec.loader.exec_module(module)
  return module.get_config().model


DETECT = """
import jax
from alexnet_jax.parallel import distributed
joined = distributed.initialize()
print(joined, jax.distributed.is_initialized(), jax.process_count(), jax.process_index())
"""


def _no_cluster_env():
  return {k: v for k, v in _env(1).items()
          if not k.startswith(('SLURM_', 'OMPI_', 'PMI_', 'JAX_COORDINATOR', 'KUBERNETES_'))}


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_no_detected_cluster_is_one_process_without_jax_distributed():
  done = subprocess.run([sys.executable, '-c', DETECT], cwd=REPO, env=_no_cluster_env(),
                        capture_output=True, text=True, timeout=TIMEOUT)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split()[-4:] == ['False', 'False', '1', '0']


@pytest.mark.parametrize('ntasks', [1, 2])
def test_a_detected_slurm_job_step_is_joined(ntasks):
  # Each task of `srun -n N` as SLURM describes it: JAX's own detection, through the
  # public jax.distributed.initialize(), finds the job step and its processes.
  port = str(_free_port())
  procs = [subprocess.Popen(
      [sys.executable, '-c', DETECT], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=dict(_no_cluster_env(), SLURM_JOB_ID='7', SLURM_STEP_NODELIST='localhost',
                          SLURM_NTASKS=str(ntasks), SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                          JAX_COORDINATOR_PORT=port))
           for i in range(ntasks)]
  for i, proc in enumerate(procs):
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    # One task is joined as JAX does it, but is not a multi-process run.
    assert out.split()[-4:] == [str(ntasks > 1), 'True', str(ntasks), str(i)]


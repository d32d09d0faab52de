"""The multi-host commands of docs/multihost.md, run as written against a local GCS server.

Its block builds the dataset into a bucket, then
launches on a TPU pod (launch/tpu_pod.sh) or under SLURM (launch/slurm_gpu.sbatch). Here the
bucket is one of the test object store's (tests/object_store.py) and the config a 2-step run
on the demo dataset; each launcher runs with DRY_RUN=1, and the per-process command it
prints runs as two local processes of 2 CPU devices each: the TPU one with explicit
`--coordinator_address` flags (a real pod's come from its metadata server), the SLURM one
with the variables `srun` sets for each task, which JAX reads itself. The TPU run finds the
dataset missing, so its process 0 builds it into the bucket while the other waits; the
SLURM run, second, reads that build. The build command runs with --dry_run here
(tests/test_readme.py); tests/test_imagenet_build.py runs it on ImageNet tars.
"""

import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600
# The launch commands of docs/multihost.md with their config replaced by this 2-step run on the demo
# dataset (built into the bucket by process 0 alone, or by the build command first).
CONFIG = '''
from configs import demo


def get_config():
  config = demo.get_config()
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (32, 32)
  config.data.statistics = 'imagenet'  # No pass over the data: the build is what is tested.
  config.batch_size = 4  # 2 per process.
  config.max_steps = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.eval_views = ('center',)
  config.data.eval_split = 'validation[:40]'  # Enough to count; the 500 add nothing here.
  config.eval_batch_size = 20
  config.mesh.data = -1
  config.mesh.model = 1
  return config
'''


def readme_launch_commands() -> list[str]:
  """The commands of docs/multihost.md's launch block, continued lines joined."""
  with open(os.path.join(REPO, 'docs', 'multihost.md')) as f:
    section = f.read().split('# Multi-host training (`launch/`)\n', 1)[1]
  block = re.search(r'^```bash\n(.*?)^```', section, re.S | re.M).group(1)
  block = block.replace('\\\n', ' ')
  return [' '.join(line.split()) for line in block.splitlines()
          if line.strip() and not line.lstrip().startswith('#')]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture
def launch(object_store, tmp_path):
  """(commands with this test's config and a new bucket, the environment to run them in)."""
  config = tmp_path / 'two_steps.py'
  config.write_text(CONFIG)
  bucket = object_store.make_bucket(f'alexnet-jax-launch-{tmp_path.name[-20:].lower().replace("_", "-")}')
  commands = [c.replace('configs/paper.py', str(config)).replace('gs://BUCKET', bucket)
              for c in readme_launch_commands()]
  env = dict(os.environ, **object_store.env, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             # `python3` and `python` in the printed commands: this environment's interpreter.
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return commands, env, bucket


def _dry_run(command: str, env: dict) -> str:
  """A launcher command of docs/multihost.md with DRY_RUN=1 (sbatch's script run by bash): what it prints."""
  argv = shlex.split(command)
  assignments = dict(a.split('=', 1) for a in argv if re.match(r'^[A-Z_]+=', a))
  argv = [a for a in argv if not re.match(r'^[A-Z_]+=', a)]
  if argv[0] == 'sbatch':  # sbatch's own options are SLURM's business, not the script's.
    argv = ['bash'] + [a for a in argv[1:] if not a.startswith('--nodes')]
  else:
    argv = ['bash'] + argv
  done = subprocess.run(argv, cwd=REPO, env=dict(env, DRY_RUN='1', **assignments),
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  return done.stdout


def _run_processes(runs: list[tuple[str, dict]]) -> list[str]:
  """Runs each (printed per-process command, its environment) as bash would, at once; their
  logs, in order."""
  procs = [subprocess.Popen(['bash', '-c', line], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for line, env in runs]
  try:
    logs = [proc.communicate(timeout=TIMEOUT)[0] for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, log in zip(procs, logs):
    assert proc.returncode == 0, log[-4000:]
  return logs


def _check_run(logs: list[str], object_store, bucket: str, run: str = 'runs/paper') -> None:
  assert all('step 2/2' in log for log in logs), logs[0][-3000:]
  held_out = [log for log in logs if 'Held-out (center view)' in log]
  assert len(held_out) == 1 and '40 images' in held_out[0]  # Process 0 prints it.
  assert 'Process 1 of 2: 2 local devices of 4.' in logs[1]
  names = object_store.objects(bucket[len('gs://'):], f'{run}/')
  assert {f'{run}/config.json', f'{run}/metrics.jsonl', f'{run}/eval.json',
          f'{run}/checkpoints/2/commit_success.txt'} <= names.keys()
  assert f'{run}/run.lock' not in names


def test_the_tpu_pod_and_slurm_commands_run_against_a_bucket(launch, object_store):
  commands, env, bucket = launch
  tpu = next(c for c in commands if 'launch/tpu_pod.sh' in c)
  printed = _dry_run(tpu, env)
  # The real launcher's steps, printed and not run: no gcloud here.
  assert 'gcloud compute tpus tpu-vm --zone=us-central2-b create alexnet' in printed
  assert "pip install -q -e . 'jax[tpu]'" in printed
  worker = [l for l in printed.splitlines() if l.startswith('python3 -m alexnet_jax.main ')]
  assert len(worker) == 1, printed
  # Every worker runs the same line; JAX would find each one's place on a pod.
  port = _free_port()
  logs = _run_processes([(f'{worker[0]} --coordinator_address=127.0.0.1:{port} '
                          f'--num_processes=2 --process_id={i}', env) for i in range(2)])
  _check_run(logs, object_store, bucket)
  # No build ran before: process 0 alone built the dataset into the bucket, the other waited.
  builds = [sum('Building demo_shapes' in line for line in log.splitlines()) for log in logs]
  assert builds == [1, 0], builds
  assert 'Waiting for process 0 to build the dataset' in logs[1]
  assert any(n.startswith('tensorflow_datasets/demo_shapes/')
             for n in object_store.objects(bucket[len('gs://'):], 'tensorflow_datasets/'))

  slurm = next(c for c in commands if 'launch/slurm_gpu.sbatch' in c)
  printed = _dry_run(slurm, env).splitlines()
  assert printed[0].startswith('srun --kill-on-bad-exit=1 python -m alexnet_jax.main ')
  task = printed[printed.index('# each task (one per node) runs:') + 1]
  port = str(_free_port())
  # A finished run is left as it is: a run of its own in the same bucket.
  task = task.replace('/runs/paper', '/runs/paper_slurm')
  logs = _run_processes([(task, dict(env, SLURM_JOB_ID='7', SLURM_STEP_NODELIST='localhost',
                                     SLURM_NTASKS='2', SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                                     JAX_COORDINATOR_PORT=port)) for i in range(2)])
  _check_run(logs, object_store, bucket, run='runs/paper_slurm')
  assert not any('Building demo_shapes' in log for log in logs)  # Built by the TPU run.

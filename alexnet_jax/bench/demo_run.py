"""The README's demo, run and measured: the figures the README and docs quote about it.

  python -m alexnet_jax.bench.demo_run --out=docs/results/demo.json

Runs the README's demo command (`python -m alexnet_jax.main --config=configs/demo.py`) as a
subprocess from the repository root, in a fresh temporary workdir and (unless
--nofresh_data_dir) a fresh TFDS data dir, so the time includes generating the synthetic
dataset and its statistics, as on a new machine. Then writes one JSON file: date, git
commit (`+dirty` when the tree has uncommitted changes), CPU model and cores, Python and jax
versions, the command, its wall seconds, the run's eval.json (top-1/top-5 error per view),
a summary of its metrics.jsonl (first and last logged training loss, steps, median images/s)
and the summary lines the command printed. tests/test_docs.py checks every figure the
README and docs quote from it against this file.
"""

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CONFIG = 'configs/demo.py'

flags.DEFINE_string('out', 'docs/results/demo.json', 'Where the JSON goes.')
flags.DEFINE_bool('fresh_data_dir', True,
                  'Generate the demo dataset and its statistics in a new TFDS data dir (a new '
                  "machine's first run); False reuses $TFDS_DATA_DIR or ~/tensorflow_datasets.")
flags.DEFINE_string('keep_workdir', None, 'Copy the finished run directory here.')


def cpu_model() -> str:
  """The CPU's model name as /proc/cpuinfo gives it (lscpu's "Model name")."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def git_commit() -> str:
  """`git rev-parse --short HEAD`, with `+dirty` when tracked files differ from it."""
  def git(*args):
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
  commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
  return commit + ('+dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def metrics_summary(path: pathlib.Path) -> dict:
  """First and last logged training loss, the last step, and the median images/s of the
  training rows of metrics.jsonl (rows with a 'loss'; evaluation rows have none)."""
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  train = [r for r in rows if 'loss' in r]
  rates = [r['images_per_s'] for r in train if 'images_per_s' in r]
  return {
      'logged_rows': len(train),
      'first_step': train[0]['step'],
      'first_loss': train[0]['loss'],
      'last_step': train[-1]['step'],
      'last_loss': train[-1]['loss'],
      'steps': max(r['step'] for r in rows),
      'median_images_per_s': statistics.median(rates) if rates else None,
  }


def main(argv):
  del argv
  command = [sys.executable, '-m', 'alexnet_jax.main', f'--config={CONFIG}']
  with tempfile.TemporaryDirectory(prefix='demo_run_') as tmp:
    workdir = pathlib.Path(tmp) / 'runs' / 'demo'
    env = dict(os.environ)
    if flags.FLAGS.fresh_data_dir:
      env['TFDS_DATA_DIR'] = str(pathlib.Path(tmp) / 'tensorflow_datasets')
    start = time.monotonic()
    done = subprocess.run(command + [f'--workdir={workdir}'], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall_s = time.monotonic() - start
    if done.returncode != 0:
      sys.exit(f'the demo failed (exit status {done.returncode}):\n{done.stderr[-3000:]}')
    results = json.loads((workdir / 'eval.json').read_text())
    summary = metrics_summary(workdir / 'metrics.jsonl')
    if flags.FLAGS.keep_workdir:
      shutil.copytree(workdir, flags.FLAGS.keep_workdir, dirs_exist_ok=True)
  printed = [line for line in done.stdout.splitlines()
             if line.startswith(('Training loss:', 'Held-out'))]
  record = {
      'command': 'python -m alexnet_jax.main --config=configs/demo.py --workdir=runs/demo',
      'measured_with': 'python -m alexnet_jax.bench.demo_run --out=' + flags.FLAGS.out,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'commit': git_commit(),
      'cpu_model': cpu_model(),
      'cpu_count': os.cpu_count(),
      'cpu_affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
      'load_average_after': list(os.getloadavg()),
      'python': platform.python_version(),
      'jax': importlib.metadata.version('jax'),
      'fresh_data_dir': flags.FLAGS.fresh_data_dir,
      'wall_s': round(wall_s, 1),
      'eval': results,
      'metrics': summary,
      'printed': printed,
  }
  out = pathlib.Path(flags.FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(record, indent=1) + '\n')
  print(json.dumps(record, indent=1))


if __name__ == '__main__':
  app.run(main)

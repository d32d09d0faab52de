"""The README's commands run as written on a one-device machine, and `mesh.model` defaults to
what the devices allow.

Every fenced `python -m alexnet_jax...` command of README.md runs in a fresh process that
sees one CPU device, from the repository root, with `--dry_run` (flags, config and device
layout checked; no data read, nothing written) where the command trains, converts, builds or
times. A command on `gs://BUCKET` runs against a bucket of the test object store
(tests/object_store.py).
"""

import logging
import os
import pathlib
import re
import shlex
import subprocess
import sys

from absl import logging as absl_logging
import jax
import pytest

from alexnet_jax import parallel
from configs import paper, paper_one_column

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Commands that would train, convert, time or compile for accelerators: checked with their
# --dry_run. Others run as written.
DRY_RUN = ('alexnet_jax.main', 'alexnet_jax.convert', 'alexnet_jax.bench', 'alexnet_jax.aot',
           'alexnet_jax.data.build')


def readme_commands() -> list[list[str]]:
  """Each `python -m alexnet_jax...` command in README.md's fenced code blocks, as argv."""
  text = (ROOT / 'README.md').read_text()
  commands = []
  for block in re.findall(r'^```[a-z]*\n(.*?)^```', text, re.S | re.M):
    block = block.replace('\\\n', ' ')  # Continued lines.
    for line in block.splitlines():
      line = line.split(' #')[0] if not line.lstrip().startswith('#') else ''
      for part in line.split('&&'):
        argv = shlex.split(part)
        if argv[:2] == ['python', '-m'] and argv[2].startswith('alexnet_jax'):
          commands.append(argv)
  return commands


def test_the_readme_has_commands_to_check():
  modules = {argv[2] for argv in readme_commands()}
  # The demo, the paper's run and its evaluation, the converter, the benchmark, the table.
  assert {'alexnet_jax.main', 'alexnet_jax.convert', 'alexnet_jax.bench',
          'alexnet_jax.summary'} <= modules


@pytest.fixture(scope='module')
def readme_bucket(object_store):
  """The README's gs://BUCKET, as a bucket of the test object store."""
  return object_store.make_bucket('alexnet-jax-readme')


@pytest.mark.parametrize('argv', readme_commands(), ids=lambda argv: ' '.join(argv[2:4]))
def test_readme_command_runs_on_one_device(argv, request):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  if any('gs://BUCKET' in a for a in argv):
    bucket = request.getfixturevalue('readme_bucket')
    env.update(request.getfixturevalue('object_store').env)
    argv = [a.replace('gs://BUCKET', bucket) for a in argv]
  run = [sys.executable] + argv[1:] + (['--dry_run'] if argv[2] in DRY_RUN else [])
  result = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (
      f'{shlex.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}')
  if argv[2] in DRY_RUN:
    assert 'dry run:' in result.stdout
  if argv[2] == 'alexnet_jax.main':
    # One device: both columns there, whatever the config asks for by default.
    assert 'model=1' in result.stdout


@pytest.mark.parametrize('devices, columns, data, expected', [
    (1, 2, -1, 1), (2, 2, -1, 2), (4, 2, -1, 2), (4, 1, -1, 1), (4, 2, 2, 2), (4, 2, 4, 1)])
def test_mesh_model_defaults_to_what_the_devices_allow(devices, columns, data, expected, caplog):
  config = paper_one_column.get_config() if columns == 1 else paper.get_config()
  config.mesh.model = parallel.AUTO
  config.mesh.data = data
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (32, 32)
  absl_logging.set_verbosity(absl_logging.INFO)
  with caplog.at_level(logging.INFO):
    layout = parallel.Layout.from_config(config, devices=jax.devices()[:devices])
  assert (layout.model_size, layout.data_size) == (expected, data if data > 0 else devices // expected)
  assert f'config.mesh.model=-1 (what the devices allow): {expected}' in caplog.text
  # An explicit value stays what it says.
  config.mesh.model = 1
  assert parallel.Layout.from_config(config, devices=jax.devices()[:devices]).model_size == 1


def notebook_snippets() -> list[str]:
  """The python blocks of README.md's section "The network in a notebook", in order."""
  text = (ROOT / 'README.md').read_text()
  section = text.split('\n## The network in a notebook\n', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'^```python\n(.*?)^```', section, re.S | re.M)


def test_notebook_snippets_run_as_written(tiny_run, tmp_path, monkeypatch):
  """The README's notebook code, in one namespace as a notebook runs it, from a directory
  holding runs/demo (a tiny run of the same kind: a config.json beside its checkpoints)."""
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'runs' / 'demo').symlink_to(tiny_run[1], target_is_directory=True)
  monkeypatch.chdir(tmp_path)
  snippets = notebook_snippets()
  assert len(snippets) >= 3  # The functions, a trained run, the Flax module.
  namespace = {}
  for code in snippets:
    exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  # What the snippets claim about their results.
  assert namespace['logits'].shape == (2, 1000) and namespace['features'].shape == (2, 4096)
  assert namespace['probs'].shape == (1, 2) and namespace['shown'].dtype == 'uint8'
  assert list(namespace['acts']) == [n for n in namespace['alexnet_jax'].model.ACTIVATIONS if n != 'cnorm2']
  assert len(namespace['conv2']) == 2


def test_convert_runs_outside_the_repository(tmp_path):
  """convert's default config comes from the package: no configs/ folder needed (a tree
  holding the package alone, run from elsewhere)."""
  (tmp_path / 'alexnet_jax').symlink_to(ROOT / 'alexnet_jax', target_is_directory=True)
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(tmp_path))
  result = subprocess.run([sys.executable, '-m', 'alexnet_jax.convert', '--caffemodel=bvlc.caffemodel',
                           '--output=runs/bvlc', '--dry_run'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'the config computes bvlc_alexnet' in result.stdout

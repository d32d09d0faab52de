"""The commands of the README and docs run as written on a one-device machine, and
`mesh.model` defaults to what the devices allow.

Every `python -m alexnet_jax...` command of README.md and docs/*.md, in a fenced code block
or in an inline code span of the prose, runs in a fresh process that sees one CPU device,
from the repository root:
- with `--dry_run` (flags, config and device layout checked; no data read, nothing written)
  where the command trains, converts, builds, compiles or times (DRY_RUN);
- with `--helpfull` (or argparse's `--help`) where the command has no dry run and reads data
  that is not here (a dataset, a finished run, CIFAR-10's download) or runs for minutes
  (HELP_ONLY), and where prose names a command with no arguments: the module loads, and every
  flag the command passes is one it defines;
- as written otherwise.
A command on `gs://BUCKET` runs against a bucket of the test object store
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

from alexnet_jax import config as alexnet_config
from alexnet_jax import parallel
from configs import paper, paper_one_column

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = ['README.md'] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'docs').glob('*.md'))
# Commands that would train, convert, time or compile for accelerators: checked with their
# --dry_run.
DRY_RUN = ('alexnet_jax.main', 'alexnet_jax.caffe.convert', 'alexnet_jax.bench', 'alexnet_jax.aot',
           'alexnet_jax.data.build')
# Commands with no --dry_run that need data or minutes: their module and flags are checked.
HELP_ONLY = ('alexnet_jax.data.statistics', 'alexnet_jax.data.prepare', 'alexnet_jax.analysis.report',
             'alexnet_jax.analysis.figures', 'alexnet_jax.experiments.cifar10',
             'alexnet_jax.bench.stats_subset', 'alexnet_jax.bench.imagenet_build',
             'alexnet_jax.bench.demo_run')


def _argvs(text: str) -> list[list[str]]:
  """The `python -m alexnet_jax...` commands of shell text, as argv."""
  commands = []
  text = text.replace('\\\n', ' ')  # Continued lines.
  for line in text.splitlines():
    line = line.split(' #')[0] if not line.lstrip().startswith('#') else ''
    for part in line.split('&&'):
      argv = shlex.split(part)
      if argv[:2] == ['python', '-m'] and len(argv) > 2 and argv[2].startswith('alexnet_jax'):
        commands.append(argv)
  return commands


def doc_commands(doc: str) -> list[list[str]]:
  """Each `python -m alexnet_jax...` command of one document: its fenced code blocks, then
  the inline code spans of its prose."""
  text = (ROOT / doc).read_text()
  fence = re.compile(r'^```[a-z]*\n(.*?)^```', re.S | re.M)
  commands = [argv for block in fence.findall(text) for argv in _argvs(block)]
  prose = fence.sub('', text)
  commands += [argv for span in re.findall(r'`(python -m alexnet_jax[^`]*)`', prose) for argv in _argvs(span)]
  return commands


def readme_commands() -> list[list[str]]:
  return doc_commands('README.md')


def all_commands() -> list[tuple[str, list[str]]]:
  seen, out = set(), []
  for doc in DOCUMENTS:
    for argv in doc_commands(doc):
      if (key := shlex.join(argv)) not in seen:
        seen.add(key)
        out.append((doc, argv))
  return out


def test_the_readme_has_commands_to_check():
  modules = {argv[2] for argv in readme_commands()}
  # The demo, the paper's run and its evaluation, building ImageNet.
  assert {'alexnet_jax.main', 'alexnet_jax.data.build'} <= modules
  modules = {argv[2] for _, argv in all_commands()}
  # The docs: the converter, the benchmarks, the layer table, the compiler, the statistics.
  assert {'alexnet_jax.caffe.convert', 'alexnet_jax.bench', 'alexnet_jax.model.summary',
          'alexnet_jax.aot', 'alexnet_jax.data.statistics', 'alexnet_jax.analysis.report'} <= modules
  # Every command is one of the kinds above or cheap to run as written.
  assert modules <= set(DRY_RUN) | set(HELP_ONLY) | {'alexnet_jax.model.summary'}, modules


def test_the_readme_keeps_the_two_commands():
  """.ci/run runs the README's test command; the demo command is the first thing to try."""
  text = (ROOT / 'README.md').read_text()
  ci = (ROOT / '.ci' / 'run').read_text()
  test_command = ("pip install -e '.[test]' && python -m alexnet_jax.aot --install_compilers && "
                  'python -m pytest')
  assert test_command in text and test_command in ci
  assert 'pip install -e . && python -m alexnet_jax.main --config=configs/demo.py --workdir=runs/demo' in text


@pytest.fixture(scope='module')
def readme_bucket(object_store):
  """The README's gs://BUCKET, as a bucket of the test object store."""
  return object_store.make_bucket('alexnet-jax-readme')


@pytest.mark.parametrize('doc, argv', all_commands(),
                         ids=lambda x: x if isinstance(x, str) else ' '.join(x[2:4]))
def test_readme_command_runs_on_one_device(doc, argv, request):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  if any('gs://BUCKET' in a for a in argv):
    bucket = request.getfixturevalue('readme_bucket')
    env.update(request.getfixturevalue('object_store').env)
    argv = [a.replace('gs://BUCKET', bucket) for a in argv]
  if argv[2] in HELP_ONLY or len(argv) == 3:  # No arguments: prose naming the command.
    # absl's help exits with status 1, argparse's (alexnet_jax.bench) with 0; neither prints a
    # traceback unless the module fails to load. argparse knows only --help.
    result = subprocess.run([sys.executable, '-m', argv[2], '--helpfull'], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    if 'unrecognized arguments: --helpfull' in result.stderr:
      result = subprocess.run([sys.executable, '-m', argv[2], '--help'], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
    assert result.stdout.strip() and 'Traceback' not in result.stderr and result.returncode in (0, 1), (
        f'{doc}: {argv[2]} does not load:\n{result.stderr[-2000:]}')
    for flag in (a[2:].split('=', 1)[0] for a in argv[3:] if a.startswith('--')):
      if not flag.startswith('config.'):  # Config fields: the config file's business.
        name = flag[2:] if flag.startswith('no') and f'[no]{flag[2:]}' in result.stdout else flag
        assert re.search(rf'--(\[no\])?{re.escape(name)}\b', result.stdout), (
            f'{doc}: {argv[2]} has no --{flag}')
    return
  run = [sys.executable] + argv[1:] + (['--dry_run'] if argv[2] in DRY_RUN else [])
  result = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (
      f'{doc}: {shlex.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}')
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
    run = alexnet_config.RunSpec.from_config(config)
    layout = parallel.Layout.for_run(run, devices=jax.devices()[:devices])
  assert (layout.model_size, layout.data_size) == (expected, data if data > 0 else devices // expected)
  assert f'config.mesh.model=-1 (what the devices allow): {expected}' in caplog.text
  # An explicit value stays what it says.
  config.mesh.model = 1
  run = alexnet_config.RunSpec.from_config(config)
  assert parallel.Layout.for_run(run, devices=jax.devices()[:devices]).model_size == 1


def python_snippets(doc: str, section: str | None = None) -> list[str]:
  """The python blocks of a document (of one of its `## ` sections), in order."""
  text = (ROOT / doc).read_text()
  if section:
    text = text.split(f'\n## {section}\n', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'^```python\n(.*?)^```', text, re.S | re.M)


def _run_snippets(doc: str, snippets: list[str]) -> dict:
  """The snippets in one namespace, as a notebook runs them."""
  namespace = {}
  for code in snippets:
    exec(compile(code, doc, 'exec'), namespace)  # pylint: disable=exec-used
  return namespace


def test_notebook_snippets_run_as_written(tiny_run, tmp_path, monkeypatch):
  """The README's notebook code and docs/model.md's, each in one namespace as a notebook runs
  it, from a directory holding runs/demo (a tiny run of the same kind: a config.json beside
  its checkpoints)."""
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'runs' / 'demo').symlink_to(tiny_run[1], target_is_directory=True)
  monkeypatch.chdir(tmp_path)
  # README: a trained run, an image file in, its probabilities, fc7 and conv2 by column.
  snippets = python_snippets('README.md', 'The network in a notebook')
  assert len(snippets) == 1
  namespace = _run_snippets('README.md', snippets)
  assert namespace['probs'].shape == (1, 2) and namespace['fc7'].shape[0] == 1  # A tiny run's fc7.
  assert len(namespace['conv2']) == 2
  # docs/model.md: the functions, then the Flax module.
  snippets = python_snippets('docs/model.md')
  assert len(snippets) >= 2
  functions = _run_snippets('docs/model.md', snippets[:1])
  assert functions['logits'].shape == (2, 1000) and functions['features'].shape == (2, 4096)
  assert list(functions['acts']) == [n for n in functions['alexnet_jax'].model.ACTIVATIONS if n != 'cnorm2']
  module = _run_snippets('docs/model.md', snippets[1:])
  assert module['logits'].shape == (2, 1000) and module['fc7'].shape == (2, 4096)
  # The module's params are the functions' layout: the same logits through `apply`.
  again = functions['alexnet_jax'].apply(module['params'], module['images'], module['cfg'])
  assert float(abs(again - module['logits']).max()) <= 1e-4 * float(abs(module['logits']).max())


def test_convert_runs_outside_the_repository(tmp_path):
  """convert's default config comes from the package: no configs/ folder needed (a tree
  holding the package alone, run from elsewhere)."""
  (tmp_path / 'alexnet_jax').symlink_to(ROOT / 'alexnet_jax', target_is_directory=True)
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(tmp_path))
  result = subprocess.run([sys.executable, '-m', 'alexnet_jax.caffe.convert', '--caffemodel=bvlc.caffemodel',
                           '--output=runs/bvlc', '--dry_run'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'the config computes bvlc_alexnet' in result.stdout

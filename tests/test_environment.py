"""The run-time environment the README installs holds no compile-only backend.

The CUDA PJRT plugin and libtpu that `python -m alexnet_jax.aot` compiles with live in a
folder of their own (alexnet_jax/aot/targets.py, COMPILERS), on the path of the AOT tool and of
this test process only (conftest.py puts it on sys.path, not on PYTHONPATH). Every other
command runs without them, and so prints nothing about a GPU or TPU it does not find: no
cudart lines at `import jax`, no traceback from the CUDA plugin, no libtpu warnings.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from alexnet_jax.aot import targets

REPO = pathlib.Path(__file__).resolve().parent.parent
# What a compile-only backend prints when it is started as a run-time backend on a machine
# without its device: cudart's stub and the CUDA plugin's "Jax plugin configuration error"
# traceback, libtpu's "could not determine TPU accelerator type", "unexpected worker
# hostname" and "Logging before InitGoogle()".
NOISE = ('Traceback', 'plugin', 'cudart', 'CUDA', 'TPU', 'InitGoogle')


def _run_time_env():
  """The tests' environment as a user's shell has it: without conftest's JAX_PLATFORMS=cpu
  and its 4 fake devices, and (as conftest leaves it) with no compiler of the folder in it."""
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'XLA_FLAGS')}
  folder = targets.compilers_dir()
  assert folder not in env.get('PYTHONPATH', '').split(os.pathsep)
  assert not env.get('TPU_LIBRARY_PATH', '').startswith(folder), env['TPU_LIBRARY_PATH']
  return env


@pytest.mark.parametrize('command', [
    ['-c', 'import jax; jax.devices()'],
    ['-m', 'alexnet_jax.main', '--config=configs/demo.py', '--workdir={workdir}', '--dry_run'],
], ids=['jax.devices', 'demo dry run'])
def test_run_time_commands_print_nothing_about_absent_gpus_or_tpus(command, tmp_path):
  command = [arg.format(workdir=tmp_path / 'demo') for arg in command]
  result = subprocess.run([sys.executable, *command], cwd=REPO, env=_run_time_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  noise = [line for line in (result.stdout + result.stderr).splitlines()
           if any(word in line for word in NOISE)]
  assert not noise, (
      'a compile-only backend is a run-time backend of this environment (the CUDA plugin or '
      'libtpu installed beside jax, e.g. by the former `aot` extra: pip uninstall jax-cuda12-plugin '
      'jax-cuda12-pjrt libtpu nvidia-cuda-nvcc-cu12):\n' + '\n'.join(noise))


def test_the_aot_tool_without_its_compilers_is_a_one_line_error(tmp_path):
  env = dict(_run_time_env(), **{targets.COMPILERS_ENV: str(tmp_path / 'empty')})
  (tmp_path / 'empty').mkdir()
  result = subprocess.run([sys.executable, '-m', 'alexnet_jax.aot', '--config=configs/paper.py',
                           '--target=h100', '--dry_run'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip() == (
      f"error: no compile-only backends (CUDA plugin, libtpu) in {tmp_path / 'empty'} "
      f'($ALEXNET_JAX_COMPILERS sets the folder): install them with `python -m alexnet_jax.aot '
      '--install_compilers`.'), result.stderr
  # --install_compilers --dry_run says what it would run, and installs nothing.
  result = subprocess.run([sys.executable, '-m', 'alexnet_jax.aot', '--install_compilers', '--dry_run'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('dry run: ') and '--no-deps --target' in result.stdout
  assert all(package in result.stdout for package in ('jax-cuda12-plugin==', 'libtpu=='))
  assert os.listdir(tmp_path / 'empty') == []

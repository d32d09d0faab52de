"""The accelerators this project is launched on, as facts: compile-only devices and peaks.

`alexnet_jax.aot` compiles the train and eval steps for these targets without the
hardware: `devices(target, topology)` returns compile-only devices (JAX's
`jax.experimental.topologies`, backed by the CUDA PJRT plugin or libtpu, which live in a
folder of their own: `COMPILERS`, `compilers_dir`), and each target's peak rates turn a
compiled program's cost analysis into a roofline projection. The figures are the vendors'
published per-device numbers; each line names its source. They are inputs to a
projection, not measurements.

This module imports nothing of jax or of this package: tests/conftest.py reads it before
jax is first imported, to put the compilers' folder on the test process's path.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

# ---------------------------------------------------------------- the compile-only backends
# What gives `python -m alexnet_jax.aot` its compile-only devices: the CUDA PJRT plugin,
# ptxas (nvidia-cuda-nvcc: the GPU program to machine code; the plugin finds it through
# the `nvidia` namespace package) and libtpu. Each plugin is built for one jax release and
# is pinned with it. They are installed (`--install_compilers`: pip --target --no-deps) into
# a folder of their own that only the AOT tool and the test process put on their import
# path. Installed beside jax, they would be run-time backends of every process of the
# environment, and on a machine without a GPU or TPU each process would print why it
# finds none (cudart's lines at `import jax`, the CUDA plugin's traceback, libtpu's
# warnings). Running on a GPU or TPU is `jax[cuda12]` or `jax[tpu]` (README, Install).
COMPILERS_JAX = '0.10.2'
COMPILERS = ('jax-cuda12-plugin==0.10.2', 'jax-cuda12-pjrt==0.10.2', 'nvidia-cuda-nvcc-cu12>=12.6.85',
             'libtpu==0.0.42.*')
# The folder: $ALEXNET_JAX_COMPILERS where set, else ~/.cache/alexnet_jax/compilers/jax-<version>.
COMPILERS_ENV = 'ALEXNET_JAX_COMPILERS'
INSTALL_COMPILERS = 'python -m alexnet_jax.aot --install_compilers'
_PINS = 'alexnet_jax_compilers.txt'  # In the folder: the COMPILERS it holds, written last.
_REEXEC = '_ALEXNET_JAX_COMPILERS_REEXEC'  # Set in the re-executed process (a loop guard).


def compilers_dir() -> str:
  """The folder that holds (or will hold) the compile-only backends."""
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.abspath(os.environ.get(COMPILERS_ENV) or
                         os.path.join(cache, 'alexnet_jax', 'compilers', f'jax-{COMPILERS_JAX}'))


def _jaxlib_problem() -> str | None:
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    version = 'none'
  if version != COMPILERS_JAX:
    return (f'the compile-only backends (alexnet_jax/targets.py, COMPILERS) are built for jax '
            f'{COMPILERS_JAX} and this environment has jaxlib {version}: '
            f'pip install jax=={COMPILERS_JAX} jaxlib=={COMPILERS_JAX}')
  return None


def compilers_problem(folder: str | None = None) -> str | None:
  """Why the compile-only backends cannot be used from `folder` (default `compilers_dir()`),
  as a line naming the fix; None where they can."""
  folder = folder or compilers_dir()
  problem = _jaxlib_problem()
  if problem:
    return problem
  try:
    with open(os.path.join(folder, _PINS)) as f:
      pins = tuple(f.read().split())
  except OSError:
    return (f'no compile-only backends (CUDA plugin, libtpu) in {folder} (${COMPILERS_ENV} '
            f'sets the folder): install them with `{INSTALL_COMPILERS}`')
  if pins != COMPILERS:
    return (f'{folder} holds {" ".join(pins)}, not this version\'s {" ".join(COMPILERS)}: '
            f'reinstall with `{INSTALL_COMPILERS}`')
  return None


def install_compilers(dry_run: bool = False) -> None:
  """Installs COMPILERS into `compilers_dir()` (pip --target, --no-deps: they need nothing
  more), where it does not hold them already. pip writes into a new folder beside it,
  renamed into place when complete, so the folder is either whole or absent. Raises a
  one-line ValueError where jaxlib is not the version they are built for, or pip fails."""
  folder = compilers_dir()
  problem = compilers_problem(folder)
  if problem and _jaxlib_problem():
    raise ValueError(problem)
  command = [sys.executable, '-m', 'pip', 'install', '--no-deps', '--target']
  if problem is None or dry_run:
    said = (f'{folder} holds the compile-only backends already: {" ".join(COMPILERS)}.' if problem is None
            else f'{shlex.join(command + [folder, *COMPILERS])} (nothing installed)')
    print(f'dry run: {said}' if dry_run else said)
    return
  parent = os.path.dirname(folder)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=os.path.basename(folder) + '.installing.', dir=parent)
  try:
    print(f'Installing {" ".join(COMPILERS)} into {folder} ...', flush=True)
    if subprocess.run(command + [staging, *COMPILERS]).returncode:
      raise ValueError(f'pip could not install {" ".join(COMPILERS)} (its output is above)')
    with open(os.path.join(staging, _PINS), 'w') as f:
      f.write('\n'.join(COMPILERS) + '\n')
    if os.path.lexists(folder):
      shutil.rmtree(folder)
    os.replace(staging, folder)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  print(f'Installed into {folder}; `python -m alexnet_jax.aot` puts it on its own path.')


def _not_importable() -> str:
  """Why a compile-only backend does not import in this process."""
  return compilers_problem() or (
      f'{compilers_dir()} is not on this process\'s import path (`python -m alexnet_jax.aot` puts it '
      'there before jax is imported; in a process of your own, put it first on PYTHONPATH)')


def _on_path(folder: str) -> bool:
  real = os.path.realpath(folder)
  return any(os.path.realpath(p or '.') == real for p in sys.path)


def use_compilers(args: list[str]) -> None:
  """Makes this `python -m alexnet_jax.aot` process one whose jax saw the compile-only
  backends from its first import: returns where their folder is on sys.path; else
  re-executes the same command (`args`: its arguments) with the folder first on
  PYTHONPATH and JAX_PLATFORMS=cpu (compile-only devices need no run-time backend). Exits
  with one line where the folder is missing or stale."""
  problem = compilers_problem()
  if problem:
    sys.exit(f'error: {problem}.')
  folder = compilers_dir()
  if _on_path(folder):
    return
  if os.environ.get(_REEXEC):  # A loop guard.
    sys.exit(f'error: {folder} is not on the import path after putting it on PYTHONPATH '
             '(python -E and -I ignore PYTHONPATH).')
  paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder] + paths), JAX_PLATFORMS='cpu')
  env[_REEXEC] = '1'
  # The interpreter's own options and `-m alexnet_jax.aot`, as this process was started.
  start = sys.orig_argv[1:len(sys.orig_argv) - len(sys.argv) + 1]
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *start, *args], env)


@dataclasses.dataclass(frozen=True)
class Gpu:
  """An NVIDIA GPU's device description, written as XLA's GPU TargetConfig text
  (`GpuTargetConfigProto`, the format of XLA's xla/tools/hlo_opt/gpu_specs/), so that the
  CUDA plugin compiles for it with no GPU present."""
  name: str  # The device_kind JAX reports.
  compute_capability: tuple[int, int]
  sm_count: int
  fp32_units_per_sm: int
  shared_memory_per_sm: int
  shared_memory_per_block_optin: int
  l2_cache_bytes: int
  clock_ghz: float
  memory_bytes: int
  memory_bandwidth: float  # bytes/s
  # Dense tensor-core peaks, FLOP/s. XLA computes float32 convolutions and matrix products
  # in TF32 on these GPUs by default (JAX's default matmul precision), so float32's peak
  # is TF32's.
  peak_flops: dict
  source: str
  cudnn: tuple[int, int, int] = (9, 8, 0)
  cuda: tuple[int, int] = (12, 8)

  def target_config(self) -> str:
    major, minor = self.compute_capability
    return f'''gpu_device_info {{
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: {self.shared_memory_per_block_optin}
  shared_memory_per_core: {self.shared_memory_per_sm}
  threads_per_core_limit: 2048
  core_count: {self.sm_count}
  fpus_per_core: {self.fp32_units_per_sm}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(self.memory_bandwidth)}
  l2_cache_size: {self.l2_cache_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: {self.cudnn[0]} minor: {self.cudnn[1]} patch: {self.cudnn[2]} }}
runtime_version {{ major: {self.cuda[0]} minor: {self.cuda[1]} }}
device_description_str: "{self.name}"
'''


@dataclasses.dataclass(frozen=True)
class Tpu:
  """A TPU generation as libtpu names it ('v5e:2x2'), with its per-chip figures."""
  generation: str  # libtpu's name: 'v4', 'v5e', 'v5p', 'v6e'.
  memory_bytes: int  # HBM per chip.
  memory_bandwidth: float  # bytes/s per chip.
  # Per chip, FLOP/s. The MXU multiplies in bfloat16: float32 products at JAX's default
  # precision run as one bfloat16 pass, so float32's peak is bfloat16's.
  peak_flops: dict
  source: str


GiB = 1024 ** 3

GPUS = {
    'h100': Gpu(
        name='NVIDIA H100 80GB HBM3', compute_capability=(9, 0), sm_count=132, fp32_units_per_sm=128,
        shared_memory_per_sm=233472, shared_memory_per_block_optin=232448, l2_cache_bytes=50 * 2**20,
        clock_ghz=1.98, memory_bytes=81559 * 2**20, memory_bandwidth=3.35e12,
        peak_flops={'bfloat16': 989.4e12, 'float32': 494.7e12},
        source='NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BF16 989.4 TFLOP/s and TF32 '
               '494.7 TFLOP/s dense, 80 GB HBM3 at 3.35 TB/s; 132 SMs, 50 MB L2, 1.98 GHz boost'),
    'a100': Gpu(
        name='NVIDIA A100-SXM4-80GB', compute_capability=(8, 0), sm_count=108, fp32_units_per_sm=64,
        shared_memory_per_sm=167936, shared_memory_per_block_optin=166912, l2_cache_bytes=40 * 2**20,
        clock_ghz=1.41, memory_bytes=81920 * 2**20, memory_bandwidth=2.039e12,
        peak_flops={'bfloat16': 312e12, 'float32': 156e12},
        source='NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM: BF16 312 TFLOP/s and TF32 '
               '156 TFLOP/s dense, 80 GB HBM2e at 2,039 GB/s; 108 SMs, 40 MB L2, 1.41 GHz boost'),
}

TPUS = {
    'v4': Tpu('v4', 32 * GiB, 1.2e12, {'bfloat16': 275e12, 'float32': 275e12},
              'Google Cloud TPU v4 documentation: 275 TFLOP/s bf16, 32 GiB HBM2 at 1,200 GB/s per chip'),
    'v5e': Tpu('v5e', 16 * GiB, 8.19e11, {'bfloat16': 197e12, 'float32': 197e12},
               'Google Cloud TPU v5e documentation: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s per chip'),
    'v5p': Tpu('v5p', 95 * GiB, 2.765e12, {'bfloat16': 459e12, 'float32': 459e12},
               'Google Cloud TPU v5p documentation: 459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s per chip'),
    'v6e': Tpu('v6e', 32 * GiB, 1.64e12, {'bfloat16': 918e12, 'float32': 918e12},
               'Google Cloud TPU v6e (Trillium) documentation: 918 TFLOP/s bf16, 32 GiB HBM at '
               '1,640 GB/s per chip'),
}

TARGETS = tuple(GPUS) + tuple(TPUS)
# GPU topologies are HOSTSx1xGPUS_PER_HOST, as the CUDA plugin reads them: '1x1x2' is one
# host with two GPUs, '2x1x8' two hosts with eight each.
_GPU_TOPOLOGY = re.compile(r'^(\d+)x1x(\d+)$')
# TPU topologies are libtpu's chip grids: 'AxB' (v5e, v6e) or 'AxBxC' (v4, v5p).
_TPU_TOPOLOGY = re.compile(r'^\d+x\d+(x\d+)?$')


@dataclasses.dataclass(frozen=True)
class PerDevice:
  """One device's share of the target: what a compiled program's analyses are read against."""
  kind: str
  memory_bytes: int
  memory_bandwidth: float
  peak_flops: dict
  source: str


def _unknown_target(target):
  return ValueError(f'Unknown target {target!r}: choose one of {", ".join(TARGETS)} '
                    '(--target).')


def check(target: str, topology: str) -> None:
  """A one-line ValueError for an unknown target or a topology it cannot have."""
  if target in GPUS:
    if not _GPU_TOPOLOGY.match(topology):
      raise ValueError(f'GPU topology {topology!r} is not HOSTSx1xGPUS (e.g. 1x1x1, 1x1x2, 1x1x8, '
                       '2x1x8): change --topology.')
  elif target in TPUS:
    if not _TPU_TOPOLOGY.match(topology):
      raise ValueError(f'TPU topology {topology!r} is not a chip grid (e.g. 2x2 for v5e/v6e, 2x2x1 '
                       'for v4/v5p): change --topology.')
  else:
    raise _unknown_target(target)


def _quiet_libtpu():
  # Without these, libtpu (on a machine that is not a TPU VM) prints a warning about each
  # and an error about the host list when it loads; compiling needs neither.
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', 'v5litepod-4')
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  # libtpu locks /tmp/libtpu_lockfile so that two processes do not drive one TPU; compiling
  # drives none, and a second compiling process (a test's subprocess) would be refused.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')


def devices(target: str, topology: str) -> tuple[list, PerDevice]:
  """Compile-only devices of `topology` for `target`, and one device's figures.

  Raises a one-line ValueError for an unknown target or topology, or a missing plugin.
  """
  check(target, topology)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  if target in GPUS:
    gpu = GPUS[target]
    try:
      import jax_plugins.xla_cuda12  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise ValueError(f'Compiling for {target} needs the CUDA PJRT plugin: {_not_importable()}.') from None
    desc = topologies.get_topology_desc(platform='cuda', topology_name=topology, topology=topology,
                                        target_config=gpu.target_config())
    return list(desc.devices), PerDevice(gpu.name, gpu.memory_bytes, gpu.memory_bandwidth,
                                         gpu.peak_flops, gpu.source)
  tpu = TPUS[target]
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ValueError(f'Compiling for TPU {target} needs libtpu: {_not_importable()}.') from None
  _quiet_libtpu()
  # JAX meshes on TPUs after v3 take one device per chip: a v4 chip's two TensorCores as one
  # device ('megacore'), which libtpu's compile-only v4 topology does not default to.
  options = {'chip_config_name': 'megacore'} if tpu.generation == 'v4' else {}
  try:
    desc = topologies.get_topology_desc(topology_name=f'{tpu.generation}:{topology}', platform='tpu',
                                        **options)
  except Exception as e:  # libtpu's own message names the constraint (e.g. a grid it has no slice of).
    raise ValueError(f'libtpu has no {tpu.generation} slice {topology!r} '
                     f'({str(e).splitlines()[0][:200]}): change --topology.') from None
  devs = list(desc.devices)
  return devs, PerDevice(devs[0].device_kind, tpu.memory_bytes, tpu.memory_bandwidth, tpu.peak_flops,
                         tpu.source)

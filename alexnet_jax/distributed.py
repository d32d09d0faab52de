"""Start-up of a multi-process run (several hosts, or several processes on one machine).

`initialize` calls `jax.distributed.initialize` exactly when the program is one of
several processes: given explicitly (`--coordinator_address`, `--num_processes`,
`--process_id`), or detected by JAX's own cluster environments (Cloud TPU pods,
SLURM, Open MPI, ...). A single-process run never calls it. It must run before
anything touches a JAX backend (`jax.devices()`, the first array).

On CPU, JAX 0.10's default cross-process collectives are gloo over TCP
(`jax_cpu_collectives_implementation='gloo'`), so nothing more is needed for the
fake-device multi-process runs of launch/local_multiprocess.sh and the tests.
"""

from __future__ import annotations

import jax
from absl import logging


def detected_cluster():
  """The cluster environment JAX's no-argument `jax.distributed.initialize()` would use.

  JAX exposes its detection only through `jax._src.clusters.ClusterEnv`; reusing it
  keeps this in step with JAX (TPU metadata, SLURM_*, OMPI_* variables) instead of
  re-reading those variables here. The opt-in methods (mpi4py) are skipped, as JAX
  skips them without `cluster_detection_method`.
  """
  try:
    from jax._src.clusters import ClusterEnv
  except ImportError:  # A JAX that moved it: only explicit flags start a multi-process run.
    logging.warning('JAX cluster detection unavailable; pass --coordinator_address, '
                    '--num_processes and --process_id for a multi-process run.')
    return None
  for env in ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if not env.opt_in_only_method and env.is_env_present():
      return env
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the processes of a multi-process run; returns whether this is one.

  Explicit arguments win; without them a detected cluster with more than one process
  (a SLURM job step of several tasks, an `mpirun -n N`, a multi-host TPU slice) lets
  JAX fill in everything. One process (no cluster, `srun -n 1`, a single-host TPU VM)
  leaves JAX alone.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError('--coordinator_address, --num_processes and --process_id go together: '
                       'pass all three, or none to let JAX detect the cluster.')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id must be in [0, {num_processes}), got {process_id}.')
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    env = detected_cluster()
    if env is None or env.get_process_count() <= 1:
      return False
    logging.info('%s detected: joining its %d processes.', env.__name__, env.get_process_count())
    jax.distributed.initialize()
  logging.info('Process %d of %d: %d local devices of %d.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True

"""Start-up of a multi-process run (several hosts, or several processes on one machine).

`initialize` calls `jax.distributed.initialize` before anything touches a JAX backend
(`jax.devices()`, the first array):
- with explicit arguments (`--coordinator_address`, `--num_processes`, `--process_id`),
  unless they say one process;
- without them, as `jax.distributed.initialize()`, which detects JAX's own cluster
  environments (Cloud TPU pods, SLURM, Open MPI, ...) and fills in everything. Where it
  detects none, JAX is left alone and the run is one process.

On CPU, JAX 0.10's default cross-process collectives are gloo over TCP
(`jax_cpu_collectives_implementation='gloo'`), so nothing more is needed for the
fake-device multi-process runs of launch/local_multiprocess.sh and the tests.
"""

from __future__ import annotations

import jax
from absl import logging


def _no_cluster_detected(error: ValueError) -> bool:
  # JAX's public initialize() says "nothing detected" only by this ValueError (raised
  # before it starts anything): no cluster environment and no JAX_COORDINATOR_ADDRESS gave
  # a coordinator. Any other ValueError is a half-configured cluster and is re-raised.
  return str(error).startswith('coordinator_address should be defined')


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the processes of a multi-process run; returns whether this is one.

  Explicit arguments win; `num_processes=1` leaves JAX alone. Without them, a detected
  cluster (a SLURM job step, an `mpirun -n N`, a TPU slice) lets JAX fill in everything;
  no detected cluster leaves JAX alone. A detected cluster of one process (`srun -n 1`,
  a single-host TPU VM) is joined as JAX does it, and is not a multi-process run.
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
    try:
      jax.distributed.initialize()
    except ValueError as e:
      if not _no_cluster_detected(e):
        raise
      return False
    if jax.process_count() == 1:
      return False
    logging.info('Cluster detected: joined its %d processes.', jax.process_count())
  logging.info('Process %d of %d: %d local devices of %d.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True

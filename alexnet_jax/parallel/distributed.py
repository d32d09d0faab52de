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

import itertools
from typing import Callable, TypeVar

import jax
from absl import logging

T = TypeVar('T')
# How long the other processes wait for a step process 0 takes alone: building ImageNet
# (docs/imagenet.md) and its statistics take hours, not the seconds a collective waits.
WAIT_FOR_PROCESS_0_S = 48 * 3600
_uses = itertools.count()


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


class Process0Failed(ValueError):
  """A step that process 0 takes alone failed there; its own error line says why."""


def on_process_0(what: str, step: Callable[[], T], *, timeout_s: float = WAIT_FOR_PROCESS_0_S
                 ) -> T | None:
  """Runs `step` on process 0 alone (a dataset build, the statistics, taking the lock) while
  the other processes wait; returns its result there, None elsewhere.

  The others wait on the coordination service's key-value store, not on a device
  collective: the first cross-process collective on CPU (gloo) gives up connecting after
  30 s, and a build takes hours. Process 0's exception is raised on process 0; the others
  raise Process0Failed, which points to it. what: the step in words, for that line.
  """
  if jax.process_count() == 1:
    return step()
  from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
  client = multihost.get_jax_distributed_client()
  key = f'alexnet_jax/process_0/{next(_uses)}'  # Every process counts its calls alike.
  if jax.process_index() == 0:
    try:
      result = step()
    except BaseException:
      client.key_value_set(key, 'failed')
      raise
    client.key_value_set(key, 'done')
    return result
  logging.info('Waiting for process 0 to %s.', what)
  if client.blocking_key_value_get(key, int(timeout_s * 1000)) != 'done':
    raise Process0Failed(f'process 0 could not {what} (its error line says why).')
  return None

"""The run directory (`--workdir`, local or `gs://`): the one owner of a run's files.

  files        `RunDir`: each file's name (config.json, metrics.jsonl, eval.json,
               checkpoints/, tensorboard/, run.lock); creating and checking the workdir.
  lock         one run at a time: flock on local disks, a renewed lease on object stores.
  resume       what a resumed run may change, and what a run's experiment is: one
               classification of the config's fields (also read by analysis.report).
  checkpoints  orbax saves and restores of the train state, verified; `load_params`.
  logs         orbax's and asyncio's echoes of a failed save, re-levelled to DEBUG.
"""

from alexnet_jax.rundir.files import RunDir, check_workdir, create_workdir, write_config
from alexnet_jax.rundir.lock import LeaseLock, Lock, WorkdirInUse, hold, lock_for
from alexnet_jax.rundir.resume import check_resume, config_changes

__all__ = ['RunDir', 'check_workdir', 'create_workdir', 'write_config', 'LeaseLock', 'Lock',
           'WorkdirInUse', 'hold', 'lock_for', 'check_resume', 'config_changes']

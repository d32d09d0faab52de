"""The run directory (`--workdir`): the one owner of its files' names. The workdir may be a
local path or an object-store URI (`gs://...`).

`RunDir` says where each of a run's files lives (config.json, metrics.jsonl, eval.json,
checkpoints/, checkpoints.damaged/, tensorboard/, run.lock); every module that reads or
writes a run's files takes their paths from here.
"""

from __future__ import annotations

import json
import os

from alexnet_jax import storage

LOCK_FILE = 'run.lock'
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
EVAL_FILE = 'eval.json'
CHECKPOINTS = 'checkpoints'
DAMAGED = 'checkpoints.damaged'  # Steps that cannot be restored, moved aside (never deleted).
TENSORBOARD = 'tensorboard'


class RunDir:
  """The paths of one run's files, under a local or remote workdir."""

  def __init__(self, workdir):
    self.root = storage.path(workdir)

  def __str__(self) -> str:
    return os.fspath(self.root)

  @property
  def remote(self) -> bool:
    return storage.is_remote(self.root)

  config = property(lambda self: self.root / CONFIG_FILE)
  metrics = property(lambda self: self.root / METRICS_FILE)
  eval = property(lambda self: self.root / EVAL_FILE)
  checkpoints = property(lambda self: self.root / CHECKPOINTS)
  damaged = property(lambda self: self.root / DAMAGED)
  tensorboard = property(lambda self: self.root / TENSORBOARD)
  lock = property(lambda self: self.root / LOCK_FILE)

  def has_checkpoint(self) -> bool:
    """Whether checkpoints/ holds a step directory (finished or not: a run to continue)."""
    return self.checkpoints.is_dir() and any(p.name.isdigit() for p in self.checkpoints.iterdir())


def check_workdir(workdir: str) -> None:
  """That `workdir` can be written, creating nothing that stays: a run that fails a later
  check leaves no empty directory behind (`create_workdir` makes it). On an object store:
  the bucket exists and these credentials may write there."""
  storage.check_writable(workdir, 'workdir', 'choose another --workdir')


def create_workdir(workdir: str) -> None:
  try:
    storage.path(workdir).mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or the store's answer)
    raise ValueError(f'cannot create workdir {workdir!r} ({storage.one_line(e)}): choose another '
                     '--workdir.') from None


def write_config(workdir: str, config_json: str) -> None:
  """DIR/config.json, written whole (`storage.write_whole`): the config of the run from here
  on (`RunSpec.config_json`; each checkpoint's meta keeps the config that wrote it)."""
  path = RunDir(workdir).config
  with storage.writing(path):
    storage.write_whole(path, json.dumps(json.loads(config_json), indent=2))

"""What a resumed run may change, and what a run's experiment is: one classification of the
config's fields, shared by the resume check and the results report (analysis.report).

`config_changes` gives the fields a resumed run's config changes from DIR/config.json. A
change to what is being trained (the network, data, optimizer, batch, schedule, seed)
stops the run unless `config.resume_overrides` names it; a change that only extends or
observes the run (its length, logging, evaluation, checkpoint cadence, device layout,
where the same data lives) goes on, with a log line.
"""

from __future__ import annotations

import json

from flax import traverse_util

from alexnet_jax.rundir.files import RunDir

# The fields that are not the experiment, by what they are to a run (prefixes end with a
# dot). Every other field (the network, the data and its augmentation, the optimizer, the
# batch size, the schedule, num_epochs, the seed) is the experiment.
EXTENDS = ('num_epochs', 'max_steps')  # How long the run goes on.
OBSERVES = ('log_every_steps', 'eval_every_epochs', 'eval_views', 'eval_batch_size',
            'checkpoint_every_steps', 'keep_checkpoints', 'resume_overrides', 'reevaluate',
            'lock_lease_s', 'data.prefetch_batches', 'mesh.')  # What it logs and saves, and on which devices.
WHERE = ('data.data_dir', 'data.manual_dir', 'data.prepared_dir', 'data.use_prepared')  # Where the same data lives.
# The data's reading: which folder or statistics file, how many examples the statistics
# take, the shuffle's buffer, skipped files. A resume that changed them would not repeat
# an uninterrupted run; the paper's experiment does not depend on them.
READING = ('data.folder', 'data.stats_file', 'data.stats_max_examples', 'data.shuffle_buffer',
           'data.skip_bad_files')

RESUME_MAY_CHANGE = EXTENDS + OBSERVES + WHERE
# num_epochs is the experiment's (a shorter run is another result); max_steps only stops
# a run early, which the report marks as incomplete.
NOT_THE_EXPERIMENT = ('max_steps',) + OBSERVES + WHERE + READING


def flatten(config: dict) -> dict:
  """{'dotted.field': value} of a config's JSON tree, lists as tuples."""
  flat = traverse_util.flatten_dict(config, sep='.')
  return {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def matches(field: str, names) -> bool:
  """Whether `field` is one of `names`, or under one of them (a section or a dotted prefix)."""
  return any(field == n or (n.endswith('.') and field.startswith(n)) or field.startswith(n + '.')
             for n in names if n)


def config_changes(saved_json: str, config_json: str) -> tuple[dict, dict]:
  """(guarded, free): {field: (saved, now)} of the fields `config_json` changes from
  `saved_json` (both a config's JSON).

  Fields absent from the saved config (added to the code since) are not changes: the run
  gets their current defaults, as it would have had they existed.
  """
  saved = flatten(json.loads(saved_json))
  now = flatten(json.loads(config_json))
  changed = {f: (saved[f], now[f]) for f in sorted(saved.keys() & now.keys()) if saved[f] != now[f]}
  free = {f: v for f, v in changed.items() if matches(f, RESUME_MAY_CHANGE)}
  guarded = {f: v for f, v in changed.items() if f not in free}
  return guarded, free


def _describe(changes: dict) -> str:
  return ', '.join(f'{f} {a!r} -> {b!r}' for f, (a, b) in changes.items())


def check_resume(workdir: str, config_json: str, resume_overrides: str = '') -> None:
  """Raises a one-line ValueError if the config (`config_json`) changes what DIR/config.json
  trained, beyond `resume_overrides` (config.resume_overrides); logs the changes that go
  on. Reads only."""
  run = RunDir(workdir)
  path = run.config
  if not path.exists() or not run.has_checkpoint():
    return  # No checkpoint to continue from: the new config starts the run afresh.
  text = path.read_text()
  try:
    guarded, free = config_changes(text, config_json)
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON ({e}): restore it from a checkpoint\'s '
                     'meta/metadata, or choose another --workdir.') from None
  allowed = [n.strip() for n in resume_overrides.split(',')]
  refused = {f: v for f, v in guarded.items() if not matches(f, allowed)}
  if refused:
    raise ValueError(
        f'workdir {workdir} was trained with another config ({path}): {_describe(refused)}. '
        'Resume with the saved values, choose another --workdir for a new run, or continue from '
        f'the checkpoint anyway with --config.resume_overrides={",".join(refused)}.')
  from absl import logging  # pylint: disable=g-import-not-at-top
  if guarded:
    logging.warning('Resuming with changes allowed by config.resume_overrides: %s.',
                    _describe(guarded))
  if free:
    logging.info('Resuming with changes that extend or observe the run: %s.', _describe(free))

"""Command line: `python -m alexnet_jax.main --config=configs/paper.py --workdir=DIR`.

Wires flags to `alexnet_jax.train` (train, then evaluate) or `alexnet_jax.evaluate`
(`--mode=eval`), and prints the run's summary; any config field can be overridden, e.g.
`--config.batch_size=256 --config.mesh.model=2`.

Multi-process: on a Cloud TPU pod, under SLURM (`srun`) or Open MPI (`mpirun`) the same
command joins the other processes by itself; other launchers pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (see launch/).
"""

import os
import re
import sys

# TensorFlow (the input pipeline) prints C++ INFO lines at import; keep its warnings.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and eval.json.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                  'train: train (resuming from the latest checkpoint) then evaluate; '
                  'eval: evaluate the latest checkpoint.')
flags.DEFINE_string('coordinator_address', None,
                    'HOST:PORT of process 0, for a multi-process run on a launcher JAX does not '
                    'detect (detected: Cloud TPU pods, SLURM, Open MPI).')
flags.DEFINE_integer('num_processes', None, 'Number of processes, with --coordinator_address.')
flags.DEFINE_integer('process_id', None, "This process's index in [0, num_processes).")
flags.DEFINE_bool('dry_run', False, 'Check the flags, the config and the device layout on this '
                  "machine's devices, print them, and exit: no data is read, nothing is written.")
config_flags.DEFINE_config_file('config', None, 'A config file, e.g. configs/paper.py.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def print_summary(summary: dict, num_classes: int | None = None) -> None:
  """The end of a run in a few lines on stdout: did it learn, and how well."""
  import jax  # pylint: disable=g-import-not-at-top  (imported after flag parsing)
  from alexnet_jax.data.spec import VIEWS  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    return
  if summary.get('preempted'):
    print(f"Pre-empted at step {summary['step']}: run the same command to resume.")
    return
  if summary.get('finished'):
    print(f"Already finished at step {summary['step']}: nothing trained or evaluated "
          '(--config.reevaluate=True evaluates again). Its results:')
  if 'first_loss' in summary:
    print(f"Training loss: {summary['first_loss']:.4f} (first logged) -> {summary['last_loss']:.4f} "
          f"(step {summary['step']}).")
  # Chance: a random guess's error, top-1 and top-5, each beside its own figure.
  chance1 = f", chance {100 * (1 - 1 / num_classes):.1f}%" if num_classes else ''
  chance5 = f" (chance {100 * (1 - min(5, num_classes) / num_classes):.1f}%)" if num_classes else ''
  for v in VIEWS:
    if v in summary.get('eval', {}):
      r = summary['eval'][v]
      print(f"Held-out ({v} view{'s' if v == 'ten' else ''}): top-1 error {100 * r['top1_error']:.2f}% "
            f"(accuracy {100 * (1 - r['top1_error']):.2f}%{chance1}), top-5 error "
            f"{100 * r['top5_error']:.2f}%{chance5}, {r['examples']} images.")


def dry_run(run, workdir: str, mode: str) -> str | None:
  """What --dry_run checks, the config having been parsed: the layout on this machine's
  devices (parallel.Layout.for_run). Returns the error line, or None."""
  from alexnet_jax import parallel  # pylint: disable=g-import-not-at-top
  try:
    layout = parallel.Layout.for_run(run)
  except ValueError as e:
    return f'error: {e}'
  print(f'dry run: --mode={mode} --workdir={workdir}: the config is valid; {layout} on '
        f'{layout.mesh.devices.size} of {len(layout.mesh.devices.flat[0].client.devices())} '
        'device(s). Nothing was read or written.')
  return None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # After flag parsing: --help stays fast.
  # pylint: disable=g-import-not-at-top
  from alexnet_jax.config import RunSpec
  from alexnet_jax.parallel import distributed
  from alexnet_jax.rundir import logs
  # pylint: enable=g-import-not-at-top
  logging.get_absl_handler().addFilter(logs.QuietLibraries())
  try:
    run = RunSpec.from_config(FLAGS.config)  # The config's one parse.
    # Before anything touches a JAX backend: jax.distributed must come first.
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  except ValueError as e:
    sys.exit(f'error: {e}')
  if FLAGS.dry_run:
    sys.exit(dry_run(run, FLAGS.workdir, FLAGS.mode))
  # pylint: disable=g-import-not-at-top
  from alexnet_jax import evaluate, rundir, storage, train
  from alexnet_jax.rundir import checkpoints
  # pylint: enable=g-import-not-at-top
  try:
    if FLAGS.mode == 'eval':
      results = evaluate.evaluate_checkpoint(run, FLAGS.workdir)
      print_summary({'eval': results}, run.model.num_classes)
    else:
      summary = train.train_and_evaluate(run, FLAGS.workdir)
      print_summary(summary, summary.get('num_classes'))
  except (ValueError, FileNotFoundError, train.TrainingDiverged, rundir.WorkdirInUse,
          checkpoints.CheckpointSaveError, storage.WriteError) as e:
    # Bad config, data, files or checkpoints, a workdir in use, a full disk or a store that
    # refuses writes: one line that says what to change.
    sys.exit(f'error: {e}')


def parse_flags(argv):
  """absl's parsing, with a mistyped --config.field reported in one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}\nPass --helpfull for the flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown field or a value of the wrong type; a
    # KeyError's str() is the repr of a multi-line message, so its first argument is read.
    sys.exit(_config_error(argv, e.args[0] if isinstance(e, KeyError) and e.args else str(e)))


def _config_error(argv, text) -> str:
  """One line for a --config.field that cannot be applied: the argument, the reason and,
  for a misspelled field, the field meant."""
  text = str(text)
  reason = ' '.join(text.split()).strip('\'"')
  args = [a for a in argv[1:] if a.startswith('--config.')]
  # The argument whose field the message names; every --config argument if none does.
  named = [a for a in args if re.search(rf"\b{re.escape(a.split('=')[0].split('.')[-1])}\b", text)]
  bad = named or args
  meant = re.search(r'Did you mean "([^"]+)"', text)
  if meant and len(bad) == 1:
    field = bad[0].split('=')[0]
    reason = f'no field {field}; did you mean {field.rsplit(".", 1)[0]}.{meant.group(1)}?'
  return (f'error: cannot apply {" ".join(bad)} ({reason}): fields and their types are in '
          'alexnet_jax/config.py and the specs it names (model.Spec, data.spec.DataSpec, ...).')

if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

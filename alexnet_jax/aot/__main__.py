"""`python -m alexnet_jax.aot --config=configs/paper.py --target=h100 --topology=1x1x2`:
the run's steps compiled for a target that is not here (aot.programs), and the table of
them (--table). `--install_compilers` installs the compile-only backends (aot.targets).

The backends must be on the path before JAX is first imported, so this module reads its
flags itself first, and re-executes the command with their folder on the path.
"""

from __future__ import annotations

import json
import os
import sys

from alexnet_jax.aot import targets


def _bool_flag(args: list[str], name: str) -> bool | None:
  """An absl boolean flag's value in `args` (--name, --name=false, --noname), read before
  absl parses them; None where absent."""
  value = None
  for arg in args:
    if arg == '--':
      break
    key, has_value, text = arg.lstrip('-').partition('=')
    if not arg.startswith('-'):
      continue
    if key == name:
      value = not has_value or text.lower() in ('true', 't', '1')
    elif key == f'no{name}' and not has_value:
      value = False
  return value


def _before_jax(args: list[str]) -> None:
  """`python -m alexnet_jax.aot ARGS`, before anything imports the compile-only backends:
  --install_compilers installs them (and stops, where it is the only flag but --dry_run);
  --help needs none; anything else re-executes this command with their folder on the path,
  or stops with one line where it is missing."""
  install = _bool_flag(args, 'install_compilers')
  args = [a for a in args if _bool_flag([a], 'install_compilers') is None]
  if install:
    try:
      targets.install_compilers(dry_run=bool(_bool_flag(args, 'dry_run')))
    except ValueError as e:
      sys.exit(f'error: {e}.')
    if all(_bool_flag([a], 'dry_run') is not None for a in args):
      sys.exit(0)
  if not any(a.lstrip('-').partition('=')[0] in ('help', 'helpshort', 'helpfull', 'h', '?')
             for a in args if a.startswith('-')):
    targets.use_compilers(args)


if __name__ == '__main__':
  # The package (alexnet_jax/__init__.py) has imported jax without the plugins by now; the
  # process that compiles is a fresh one whose jax sees them from its first import.
  _before_jax(sys.argv[1:])

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402

from alexnet_jax import parallel, storage  # noqa: E402
from alexnet_jax.aot.programs import TABLE, _gb, compile_run, format_row, markdown_table  # noqa: E402
from alexnet_jax.config import RunSpec  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position


def _main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_file = config_flags.get_config_filename(FLAGS['config'])
  rows = []
  plan = ([(t, topo, m, d) for t, topo, m in TABLE for d in ('float32', 'bfloat16')
           if not FLAGS.table_targets or t in FLAGS.table_targets] if FLAGS.table else
          [(FLAGS.target, FLAGS.topology, None, d) for d in (FLAGS.dtype or [FLAGS.config.model.dtype])])
  for target, topology, model_size, dtype in plan:
    targets.check(target, topology)  # Every row's flags before the first compile.
  if FLAGS.dry_run:
    for target, topology, model_size, dtype in plan:
      config = FLAGS.config.copy_and_resolve_references()
      if model_size is not None:
        config.mesh.model = model_size
      devices, device = targets.devices(target, topology)
      layout = parallel.Layout.for_run(RunSpec.from_config(config), devices=devices)
      print(f'dry run: {target} {topology} {dtype}: {len(devices)} x {device.kind}, {layout}; '
            'nothing compiled.')
    return 0
  for target, topology, model_size, dtype in plan:
    config = FLAGS.config.copy_and_resolve_references()
    config.model.dtype = dtype
    if model_size is not None:
      config.mesh.model = model_size
    print(f'Compiling {target} {topology} {dtype} ...', flush=True)
    row = compile_run(RunSpec.from_config(config), target, topology, max_batch=FLAGS.max_batch,
                      eval_step=FLAGS.eval_step)
    row['command'] = (f'python -m alexnet_jax.aot --config={config_file} --target={target} '
                      f'--topology={topology} --dtype={dtype}'
                      + f' --config.mesh.model={config.mesh.model}')
    print(format_row(row), flush=True)
    rows.append(row)
    if FLAGS.json:  # A local file or an object (gs://...), rewritten whole after each row.
      storage.write_whole(FLAGS.json, json.dumps(rows, indent=1))
  if FLAGS.markdown:
    print(markdown_table(rows))
  missing = [r for r in rows if not r['fits']]
  for r in missing:
    print(f"{r['target']} {r['topology']} {r['dtype']}: batch {r['batch']} needs "
          f"{_gb(r['memory']['total'])} per device of {_gb(r['memory_usable'])}; the largest per-device "
          f"batch that fits is {r['largest_batch_per_device']} (--config.batch_size="
          f"{r['largest_batch_per_device'] * (r['batch'] // r['batch_per_device'])}).")
  return 1 if missing else 0


def main():
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # Compile-only devices need no accelerator here: JAX itself runs on the CPU, and the
  # CUDA plugin is not initialized (it would look for a GPU and print why it found none).
  jax.config.update('jax_platforms', os.environ.get('JAX_PLATFORMS') or 'cpu')
  config_flags.DEFINE_config_file('config', None, 'Configuration file (the run to compile).',
                                  lock_config=True)
  flags.DEFINE_string('target', 'h100', f'One of {", ".join(targets.TARGETS)}.')
  flags.DEFINE_string('topology', '1x1x2', 'GPUs: HOSTSx1xGPUS_PER_HOST (1x1x2: one host, two '
                      'GPUs). TPUs: the chip grid (v5e 2x2, v4 2x2x1).')
  flags.DEFINE_list('dtype', None, 'float32 and/or bfloat16 (default: config.model.dtype).')
  flags.DEFINE_bool('max_batch', True, 'Find the largest per-device batch that fits, by compiling.')
  flags.DEFINE_bool('eval_step', True, 'Also compile the eval step (10 views when eval_views has them).')
  flags.DEFINE_bool('table', False, 'Compile every target of aot.programs.TABLE, '
                    'float32 and bfloat16.')
  flags.DEFINE_list('table_targets', None, 'With --table: only these targets (e.g. h100,a100).')
  flags.DEFINE_bool('markdown', False, 'Print the rows as a markdown table at the end.')
  flags.DEFINE_string('json', None, 'Write the rows to this JSON file.')
  flags.DEFINE_bool('dry_run', False, 'Check the flags, config, targets and layouts on the '
                    'compile-only devices; compile nothing. With --install_compilers alone: print '
                    'the pip command; install nothing.')
  flags.DEFINE_bool('install_compilers', False, 'Install the compile-only backends (the CUDA PJRT '
                    f'plugin, ptxas, libtpu: {" ".join(targets.COMPILERS)}) into their own folder, '
                    f'${targets.COMPILERS_ENV} or {targets.compilers_dir()}, which this tool puts on its '
                    'path; alone, it stops there.')
  flags.mark_flags_as_required(['config'])

  def checked(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    try:
      return _main(argv)
    except ValueError as e:  # Bad flags, config or topology: one line that says what to change.
      sys.exit(f'error: {e}')

  app.run(checked)


if __name__ == '__main__':
  main()

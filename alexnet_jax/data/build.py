"""Builds a run's dataset once, before any run: `python -m alexnet_jax.data.build --config=...`.

For a TFDS source (imagenet2012, imagenette, demo) it downloads or generates the dataset
into `config.data.data_dir` (TFDS's default, `$TFDS_DATA_DIR` or ~/tensorflow_datasets, if
unset; a gs:// data_dir is written through TensorFlow's GCS filesystem); imagenet2012 reads
the two tar files of its manual download from `config.data.manual_dir`
(<data_dir>/downloads/manual by default). Then it computes the training split's statistics
(Sec. 2's mean image and Sec. 4.1's PCA, `config.data.statistics='train_split'`) beside the
data. A run on a pod then only reads: run this once, on one machine, before the launch.

Training builds the same by itself when it is missing: process 0 alone builds, and the
other processes wait for it (`data.checks.build_dataset`), so this command only moves the
build off the run's clock. It prints where everything went, how long it took and how much
it holds.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import metrics, storage
from alexnet_jax.data import checks, sources, statistics
from alexnet_jax.data.spec import DataSpec


def build(spec: DataSpec) -> dict:
  """Builds the dataset and its statistics; returns what went where (paths, counts, bytes,
  seconds)."""
  checks.check_data_paths(spec)
  start = time.perf_counter()
  source = sources.get_source(spec)
  source.prepare()
  built = time.perf_counter()
  info = sources.dataset_info(spec)
  result = {'source': spec.source, 'num_classes': info.num_classes, 'num_train': info.num_train,
            'num_eval': info.num_eval, 'build_s': built - start}
  location = getattr(source, 'data_location', None)
  if location:
    result['data'] = location
    result['data_bytes'] = storage.size(location)
  if spec.statistics == 'train_split':
    statistics.load_stats(spec)  # Computed and written if missing (or of other data).
    result['statistics'] = sources.stats_path(spec)
  result['total_s'] = time.perf_counter() - start
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    spec = DataSpec.from_config(flags.FLAGS.config.data)  # The one parse, at the boundary.
    if flags.FLAGS.dry_run:
      checks.check_data_paths(spec)
  except ValueError as e:
    sys.exit(f'error: {e}')
  if flags.FLAGS.dry_run:
    print(f'dry run: would build {spec.source!r} in {sources.base.data_dir(spec)} and its '
          'statistics. Nothing was read or written.')
    return
  try:
    result = build(spec)
  except ValueError as e:
    sys.exit(f'error: {e}')
  logging.info('Built %s.', result)
  where = (f" in {result['data']} ({result['data_bytes'] / 2**30:,.2f} GiB)"
           if 'data' in result else '')
  print(f"{result['source']}: {result['num_train']:,} train / {result['num_eval']:,} eval images, "
        f"{result['num_classes']} classes{where}; built in "
        f"{metrics.format_duration(result['build_s'])}, "
        f"{metrics.format_duration(result['total_s'])} in all.")
  if 'statistics' in result:
    print(f"statistics: {result['statistics']}")


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'A config file, e.g. configs/paper.py.',
                                  lock_config=True)
  flags.DEFINE_bool('dry_run', False, 'Check the config and the data paths, say what would be '
                    'built, and exit.')
  flags.mark_flags_as_required(['config'])
  app.run(main)

"""Training-set statistics of Sec. 2 and 4.1: `python -m alexnet_jax.stats --config=configs/X.py`.

Computes the mean image and RGB PCA of the training split (`alexnet_jax.data.statistics`
says how) and writes them to `input_pipeline.stats_path(config.data)`. The main job runs
this by itself when that file is missing (`config.data.statistics='train_split'`), so the
command is only needed to compute the statistics ahead of time.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.data import statistics
from alexnet_jax.data.spec import DataSpec
from alexnet_jax.data.statistics import ORDER_SEED  # pylint: disable=unused-import


def compute_stats(data_cfg, batch_size: int = 32, *, show_progress: bool = True) -> dict:
  return statistics.compute_stats(DataSpec.from_config(data_cfg), batch_size,
                                  show_progress=show_progress)


def write_stats(data_cfg, *, show_progress: bool = True) -> str:
  return statistics.write_stats(DataSpec.from_config(data_cfg), show_progress=show_progress)


def main(argv):
  del argv
  print(write_stats(flags.FLAGS.config.data))


if __name__ == '__main__':
  # Flags are defined only when run as a program, so the module imports cleanly
  # next to other programs' --config flag.
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main)

"""Writes a 256x256 copy of a dataset once: `python -m alexnet_jax.prepare --config=configs/X.py`.

Each image of the train and eval splits is resized (shorter side `stored_size`) and centre
cropped (Sec. 2), then stored as `--format=jpeg` (re-encoded JPEG in TFRecord shards, the
default) or `--format=raw` (a uint8 array per split, read by memory map with no decode) in
<prepared_dir>/<split>/, with <prepared_dir>/<split>/info.json written last.
`alexnet_jax.data.sources.prepared` holds both formats' reader and writer and says what
info.json records; `input_pipeline.prepared_dir` says where the copy goes. Delete the
folder to go back to the source.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.data import sources
from alexnet_jax.data.spec import STORE_FORMATS, DataSpec


def prepare_split(data_cfg, split: str, *, store_format: str = 'jpeg', jpeg_quality: int = 90,
                  examples_per_shard: int = 1024, seed: int = 0) -> str:
  """Writes the 256x256 copy of one split (the train split in an order seeded by `seed`);
  returns its folder."""
  return sources.prepare_split(DataSpec.from_config(data_cfg), split, store_format=store_format,
                               jpeg_quality=jpeg_quality, examples_per_shard=examples_per_shard,
                               seed=seed)


def main(argv):
  del argv
  data_cfg = flags.FLAGS.config.data
  for split in (data_cfg.train_split, data_cfg.eval_split):
    print(prepare_split(data_cfg, split, store_format=flags.FLAGS.format,
                        jpeg_quality=flags.FLAGS.jpeg_quality,
                        examples_per_shard=flags.FLAGS.examples_per_shard,
                        seed=flags.FLAGS.config.seed))


if __name__ == '__main__':
  # Flags are defined only when run as a program, so the module imports cleanly
  # next to other programs' --config flag.
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.DEFINE_enum('format', 'jpeg', STORE_FORMATS,
                    'jpeg: JPEG TFRecords (small); raw: uint8 arrays (no decode, 3x256x256 '
                    'bytes per image).')
  flags.DEFINE_integer('jpeg_quality', 90, 'JPEG quality of the stored copy.')
  flags.DEFINE_integer('examples_per_shard', 1024, 'Examples per TFRecord file.')
  flags.mark_flags_as_required(['config'])
  app.run(main)

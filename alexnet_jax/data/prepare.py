"""Writes a 256x256 copy of a dataset once: `python -m alexnet_jax.data.prepare --config=configs/X.py`.

Each image of the train and eval splits is resized (shorter side `stored_size`) and centre
cropped (Sec. 2), then stored as `--format=jpeg` (re-encoded JPEG in TFRecord shards, the
default) or `--format=raw` (a uint8 array per split, read by memory map with no decode) in
<prepared_dir>/<split>/, with <prepared_dir>/<split>/info.json written last.
`alexnet_jax.data.sources.prepared` holds both formats' reader and writer and says what
info.json records; `sources.prepared_dir` says where the copy goes. Delete the
folder to go back to the source.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.data import sources
from alexnet_jax.data.spec import STORE_FORMATS, DataSpec


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    spec = DataSpec.from_config(flags.FLAGS.config.data)  # The one parse, at the boundary.
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  for split in (spec.train_split, spec.eval_split):
    print(sources.prepare_split(spec, split, store_format=flags.FLAGS.format,
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

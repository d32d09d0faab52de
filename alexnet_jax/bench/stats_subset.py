"""How close a subset's mean image comes to the full pass's, measured against the formula.

  python -m alexnet_jax.bench.stats_subset --config=configs/demo.py --sizes=100,300,1000

One pass over the whole training split, in the order the statistics pass reads it (so the
first n images are exactly the subset `config.data.stats_max_examples=n` reads). For each
n it prints the RMS over pixels of (subset mean - full mean), on the 0-255 scale, beside
the sampling formula sigma / sqrt(n) x sqrt((N - n) / (N - 1)), where sigma^2 is each
pixel's variance across the N images (averaged over pixels). `--json` writes the rows.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from alexnet_jax.data import sources, statistics
from alexnet_jax.data.decode import decode_stored
from alexnet_jax.data.spec import DataSpec


def measure(spec: DataSpec, sizes: list[int]) -> list[dict]:
  source = sources.get_source(spec)
  size = spec.stored_size
  ds = source.records(spec.train_split, 0, 1, order_seed=statistics.ORDER_SEED)
  ds = ds.map(lambda enc, _: decode_stored(enc, size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1).prefetch(8)
  total = np.zeros([size, size, 3], np.float64)
  squares = np.zeros([size, size, 3], np.float64)
  snapshots, n = {}, 0
  for (image,) in ds.as_numpy_iterator():
    image = image.astype(np.float64)
    total += image
    squares += image * image
    n += 1
    if n in sizes:
      snapshots[n] = total / n
  full = total / n
  variance = squares / n - full * full  # Per pixel, across the N images.
  rows = []
  for k in sorted(snapshots):
    measured = float(np.sqrt(np.mean((snapshots[k] - full) ** 2)))
    predicted = float(np.sqrt(np.mean(variance) / k * (n - k) / (n - 1)))
    rows.append({'n': k, 'N': n, 'rms_difference': measured, 'formula': predicted})
  return rows


def main(argv):
  del argv
  sizes = [int(s) for s in flags.FLAGS.sizes.split(',')]
  rows = measure(DataSpec.from_config(flags.FLAGS.config.data), sizes)  # The one parse.
  print(f"{'n':>8} {'N':>8} {'RMS(subset - full)':>20} {'formula':>10}")
  for r in rows:
    print(f"{r['n']:>8} {r['N']:>8} {r['rms_difference']:>20.3f} {r['formula']:>10.3f}")
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.DEFINE_string('sizes', '100,300,1000', 'Subset sizes, comma-separated.')
  flags.DEFINE_string('json', None, 'Write the rows to this file.')
  flags.mark_flags_as_required(['config'])
  app.run(main)

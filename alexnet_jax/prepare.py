"""Writes a 256x256 copy of a dataset once: `python -m alexnet_jax.prepare --config=configs/X.py`.

Each image of the train and eval splits is resized (shorter side `stored_size`), centre
cropped (Sec. 2) and re-encoded as JPEG into TFRecord shards
<prepared_dir>/<split>/data-NNNNN.tfrecord, with <prepared_dir>/<split>/info.json written
last. `prepared_dir` is `config.data.prepared_dir`, or
<data_dir>/alexnet_jax_prepared/<dataset> by default (see `input_pipeline.prepared_dir`).
The train split is written in a random order (seeded by `config.seed`), so that a shuffle
buffer smaller than the split still mixes all classes. info.json records which data the
copy was made from; `input_pipeline` reads a split from here (while
`config.data.use_prepared` is True) only if that is the configured data, and stops with a
one-line error if the data has changed since. Delete the folder to go back to the source.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from alexnet_jax import input_pipeline

def prepare_split(data_cfg, split: str, *, jpeg_quality: int = 90,
                  examples_per_shard: int = 1024, seed: int = 0) -> str:
  """Writes the 256x256 copy of one split (the train split in an order seeded by `seed`);
  returns its folder."""
  source = input_pipeline.get_source(data_cfg, use_prepared=False)
  identity = source.identity(split)
  size = data_cfg.stored_size
  out = os.path.join(input_pipeline.prepared_dir(data_cfg), split)
  tf.io.gfile.makedirs(out)
  if tf.io.gfile.exists(os.path.join(out, 'info.json')):
    tf.io.gfile.remove(os.path.join(out, 'info.json'))  # Incomplete until rewritten.

  def encode(enc, label):
    image = tf.cast(tf.round(input_pipeline.decode_stored(enc, size)), tf.uint8)
    return tf.io.encode_jpeg(image, quality=jpeg_quality), label

  order_seed = seed if split == data_cfg.train_split else None
  ds = source.records(split, 0, 1, order_seed=order_seed).map(encode, num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True).prefetch(64)
  n, writer = 0, None
  for jpeg, label in ds.as_numpy_iterator():
    if n % examples_per_shard == 0:
      if writer:
        writer.close()
      writer = tf.io.TFRecordWriter(
          os.path.join(out, f'data-{n // examples_per_shard:05d}.tfrecord'))
    example = tf.train.Example(features=tf.train.Features(feature={
        'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
    writer.write(example.SerializeToString())
    n += 1
    if n % 10_000 == 0:
      logging.info('prepare %s: %d images', split, n)
  if writer:
    writer.close()
  with tf.io.gfile.GFile(os.path.join(out, 'info.json'), 'w') as f:
    json.dump({'num_examples': n, 'class_names': source.class_names, 'size': size,
               'dataset': identity.to_json()}, f)
  logging.info('Wrote %d images of %s to %s', n, split, out)
  return out


def main(argv):
  del argv
  data_cfg = flags.FLAGS.config.data
  for split in (data_cfg.train_split, data_cfg.eval_split):
    print(prepare_split(data_cfg, split, jpeg_quality=flags.FLAGS.jpeg_quality,
                        examples_per_shard=flags.FLAGS.examples_per_shard,
                        seed=flags.FLAGS.config.seed))


if __name__ == '__main__':
  # Flags are defined only when run as a program, so the module imports cleanly
  # next to other programs' --config flag.
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.DEFINE_integer('jpeg_quality', 90, 'JPEG quality of the stored copy.')
  flags.DEFINE_integer('examples_per_shard', 1024, 'Examples per TFRecord file.')
  flags.mark_flags_as_required(['config'])
  app.run(main)

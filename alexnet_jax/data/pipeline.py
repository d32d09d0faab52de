"""Batches for the train and eval steps: `train_batches`, `eval_batches`, `device_batches`.

Every source is reduced to a tf.data stream of undecoded examples in a fixed order.
Shuffling, per-process sharding and resume-skipping all happen on that stream before any
image is decoded, so a resumed run skips steps cheaply and sees exactly the batches an
uninterrupted one would. Decoding is `Source.stored_image`, the Sec. 4.1 operations are
`augment`.

Each function returns `batches.Batches`: an iterator to `close()` (or use in a `with` block)
once done, which stops its tf.data threads while the interpreter is whole.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from alexnet_jax.data import augment, sources, spec as spec_lib, statistics
from alexnet_jax.data.batches import Batches
from alexnet_jax.data.spec import DataSpec


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


def steps_per_epoch(spec: DataSpec, global_batch_size: int) -> int:
  return spec_lib.steps_per_epoch(sources.dataset_info(spec).num_train, global_batch_size)


def train_batches(spec: DataSpec, *, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Batches:
  """Infinite training batches {'images': [B, crop, crop, 3] f32, 'labels': [B] i32}; with
  `augment_on='device'`, {'images': [B, size, size, 3] uint8, 'labels', 'epoch', 'index'}
  ([B] int32 each) for `device_augment.DeviceAugment` in the step.

  B = global_batch_size // process_count. Batch s is the same whatever `start_step` is:
  epoch e = s // steps_per_epoch shuffles this process's share with a seed from (seed, e)
  (folders and raw copies: a full permutation; other sources: a shuffle buffer), the first
  `start_step` batches are skipped before decoding, and every random choice is seeded from
  (seed, epoch, example index).
  """
  local_batch = spec_lib.local_batch_size(global_batch_size, process_count)
  source = sources.get_source(spec)
  split = spec.train_split
  steps = spec_lib.steps_per_epoch(source.num_examples(split), global_batch_size)
  if steps == 0:
    raise ValueError(f'Training split has fewer examples than one batch of '
                     f'{global_batch_size}.')
  stats = None if spec.augment_on_device else statistics.load_stats(spec)
  start_epoch, skip_steps = divmod(start_step, steps)
  buffer = max(1, spec.shuffle_buffer)

  def epoch(e):
    ds = source.epoch_records(split, process_index, process_count, seed=seed, epoch=e,
                              buffer=buffer)
    ds = ds.take(steps * local_batch)
    ds = ds.skip(tf.where(e == start_epoch, tf.constant(skip_steps * local_batch, tf.int64),
                          tf.constant(0, tf.int64)))
    return ds.map(lambda i, payload, label: (payload, label, e, i))

  def example(loaded, label, e, i):
    if spec.augment_on_device:  # The step crops, reflects, lights and centres.
      return {'images': source.stored_uint8(split, loaded, spec.stored_size),
              'labels': tf.cast(label, tf.int32), 'epoch': tf.cast(e, tf.int32),
              'index': tf.cast(i, tf.int32)}
    image = source.stored_image(split, loaded, spec.stored_size)
    image = augment.augment(image, e, i, spec=spec, stats=stats, seed=seed)
    return {'images': image, 'labels': tf.cast(label, tf.int32)}

  load = lambda payload, label, e, i: (source.load(split, payload), label, e, i)
  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  if source.loads_batches(split):
    # A raw store: one memory-map gather per batch (a Python call per image costs more
    # than its copy). Epochs hold whole batches, so batches never straddle two.
    ds = ds.batch(local_batch, drop_remainder=True).map(load)
    if spec.augment_on_device:
      ds = ds.map(lambda images, label, e, i: {
          'images': images, 'labels': tf.cast(label, tf.int32), 'epoch': tf.cast(e, tf.int32),
          'index': tf.cast(i, tf.int32)})
    else:
      ds = ds.unbatch().map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      ds = ds.batch(local_batch, drop_remainder=True)
  else:
    ds = ds.map(load).map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.prefetch(spec.prefetch_batches).with_options(_options())
  return Batches(ds.as_numpy_iterator())


def eval_batches(spec: DataSpec, *, global_batch_size: int, views: str, split: str | None = None,
                 process_index: int = 0, process_count: int = 1) -> Batches:
  """Finite eval batches {'images': [B, V, crop, crop, 3], 'labels': [B], 'mask': [B]} of
  `split` (default: the eval split); with `augment_on='device'` the images are the uint8
  [B, size, size, 3] stored images, and the eval step cuts the views.

  Every process yields ceil(ceil(num_examples / process_count) / B) batches; padding
  examples have mask False, so over all processes each example has mask True exactly once.
  """
  spec_lib.check_views(views)
  local_batch = spec_lib.local_batch_size(global_batch_size, process_count)
  split = split or spec.eval_split
  source = sources.get_source(spec)
  stats = None if spec.augment_on_device else statistics.load_stats(spec)
  crop = spec.crop_size
  n = source.num_examples(split)
  num_batches = -(-(-(-n // process_count)) // local_batch)

  @tf.autograph.experimental.do_not_convert  # Plain TF ops; AutoGraph only warns here.
  def example(loaded, label):
    if spec.augment_on_device:  # The eval step cuts the views (device_augment.eval_views).
      images = source.stored_uint8(split, loaded, spec.stored_size)
    else:
      image = source.stored_image(split, loaded, spec.stored_size)
      images = augment.eval_image(image, spec=spec, stats=stats, views=views)
    return {'images': images, 'labels': tf.cast(label, tf.int32), 'mask': tf.constant(True)}

  ds = source.records(split, process_index, process_count)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  num_views = 1 if views == 'center' else 10
  pad = (tf.zeros([spec.stored_size] * 2 + [3], tf.uint8) if spec.augment_on_device else
         tf.zeros([num_views, crop, crop, 3]))
  padding = tf.data.Dataset.from_tensors(
      {'images': pad, 'labels': tf.constant(0), 'mask': tf.constant(False)}).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch)
  ds = ds.batch(local_batch).prefetch(spec.prefetch_batches).with_options(_options())
  return Batches(ds.as_numpy_iterator())


def device_batches(batches, layout, depth: int) -> Batches:
  """Global arrays (`layout.global_batch`, a `parallel.Layout`) from each process's local
  batches, `depth` batches ahead, so the next batch is already on its way to the devices
  while the current step runs. Closing it closes `batches` too."""

  def generate():
    queue = collections.deque()
    for batch in batches:
      queue.append(layout.global_batch(batch))
      if len(queue) > depth:
        yield queue.popleft()
    yield from queue

  return Batches(generate(), closes=[batches])

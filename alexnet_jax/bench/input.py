"""Input-pipeline benchmarks: images/s per core over generated photograph-like JPEGs.

`run_stores` times, on 500x375 JPEGs in a folder source: the `stats` pass and `prepare`
(each after the folder's one-off listing and bad-file check), then the training feed from
each store of the prepared copy ('jpeg' and 'raw') with augmentation on the host and with
`augment_on='device'` (the host then only reads, decodes and batches uint8 images).

`run` writes `num_images` JPEGs of one size into a temporary folder source, builds the
TRAINING pipeline over them (decode, Sec. 2 resize/crop and mean subtraction, Sec. 4.1
crops, reflections and PCA lighting) and times batches after `warmup` batches. The figure
is the median of several timing windows, so one slow window (a neighbour's burst on a
shared machine) does not move it.
"""

import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from alexnet_jax.data import pipeline, sources
from alexnet_jax.data import statistics as data_statistics
from alexnet_jax.data.spec import DataSpec

_NUM_CLASSES = 10
_NUM_WINDOWS = 5


def _natural_looking(rng: np.random.Generator, width: int, height: int) -> Image.Image:
  """Smooth colour regions with edges and grain: JPEG-compresses like a photograph."""
  coarse = rng.uniform(0, 255, size=(rng.integers(3, 12), rng.integers(3, 12), 3))
  image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(
      (width, height), Image.BICUBIC), np.float32)
  # A few hard-edged blobs, as objects give a photograph.
  yy, xx = np.mgrid[0:height, 0:width]
  for _ in range(3):
    cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, height / 3)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    image[inside] = 0.5 * image[inside] + 0.5 * rng.uniform(0, 255, size=3)
  image += 8 * rng.standard_normal(image.shape, dtype=np.float32)
  return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_jpegs(root: str, *, jpeg_size: tuple[int, int], num_images: int,
                seed: int = 0) -> None:
  """root/train/class_k/img_i.jpg, `jpeg_size` = (width, height), quality 90."""
  rng = np.random.default_rng(seed)
  for i in range(num_images):
    class_dir = os.path.join(root, 'train', f'class_{i % _NUM_CLASSES}')
    os.makedirs(class_dir, exist_ok=True)
    _natural_looking(rng, *jpeg_size).save(os.path.join(class_dir, f'img_{i:06d}.jpg'),
                                           quality=90)


def run(run_spec, *, jpeg_size: tuple[int, int], num_images: int, batches: int,
        warmup: int) -> dict:
  """Times the training pipeline of `run_spec` (a parsed config; its source switched to the
  generated folder).

  jpeg_size: (width, height) of the generated JPEGs. batches: timed batches, split into
  windows; warmup: batches run before timing. Returns a JSON-able dict.
  """
  cores = _cores()
  batch_size = run_spec.batch_size
  if num_images < batch_size:
    raise ValueError(f'num_images {num_images} < batch size {batch_size}.')
  with tempfile.TemporaryDirectory() as tmp:
    write_jpegs(os.path.join(tmp, 'images'), jpeg_size=jpeg_size, num_images=num_images)
    # Statistics: constants, not a pass over the generated images: the pass is not what is
    # timed, and any mean image costs the same per batch.
    data = dataclasses.replace(run_spec.data, source='folder', folder=os.path.join(tmp, 'images'),
                               data_dir=os.path.join(tmp, 'data_dir'), statistics='imagenet')
    # Closed (its prefetching threads stopped) before its files are deleted.
    with pipeline.train_batches(data, global_batch_size=batch_size, seed=0) as it:
      for _ in range(warmup):
        next(it)
      per_window = max(1, batches // _NUM_WINDOWS)
      rates = []
      for _ in range(max(1, batches // per_window)):
        start = time.perf_counter()
        for _ in range(per_window):
          batch = next(it)
        rates.append(per_window * batch['images'].shape[0] / (time.perf_counter() - start))
  images_per_s = statistics.median(rates)
  result = {
      'jpeg_size': list(jpeg_size), 'images_per_s': images_per_s,
      'per_core': images_per_s / cores, 'cores': cores, 'batch_size': batch_size,
      'crop_size': data.crop_size, 'lighting': data.lighting,
      'num_images': num_images, 'batches': batches, 'warmup': warmup,
      'window_rates': rates,
  }
  print(f'input pipeline, {jpeg_size[0]}x{jpeg_size[1]} JPEGs: {images_per_s:.0f} images/s '
        f'({images_per_s / cores:.0f} per core, {cores} cores, batch {batch_size}, '
        f'crop {data.crop_size}, lighting {data.lighting})')
  return result


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def _timed(fn, images: int) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process, all its threads).
  On a machine shared with other jobs the second is the per-core figure: it does not
  count the time other processes held the cores."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def _median_rate(fn, images: int, repeats: int) -> tuple[float, float, list]:
  rates = [_timed(fn, images) for _ in range(repeats)]
  return (statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates), rates)


def _feed_rate(data: DataSpec, batch_size: int, batches: int, warmup: int) -> tuple[float, float, list]:
  with pipeline.train_batches(data, global_batch_size=batch_size, seed=0) as it:
    for _ in range(warmup):
      next(it)
    per_window = max(1, batches // _NUM_WINDOWS)

    def window():
      for _ in range(per_window):
        next(it)

    rates = [_timed(window, per_window * batch_size)
             for _ in range(max(1, batches // per_window))]
  return (statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates), rates)


def run_stores(run_spec, *, jpeg_size: tuple[int, int] = (500, 375), num_images: int = 256,
               batches: int = 20, warmup: int = 3, repeats: int = 3) -> dict:
  """Per-core images/s of the stats pass, `prepare`, and the training feed from each store
  with host and device augmentation (medians; see the module doc)."""
  cores, batch_size = _cores(), run_spec.batch_size
  results = {'jpeg_size': list(jpeg_size), 'num_images': num_images, 'cores': cores,
             'batch_size': batch_size, 'figures': {}}

  def record(name, rate, per_cpu_s, rates):
    results['figures'][name] = {'images_per_s': rate, 'per_core': per_cpu_s,
                                'per_core_wall': rate / cores, 'window_rates': rates}
    print(f'{name:<38} {rate:>8,.0f} images/s {rate / cores:>8,.0f} per core (wall), '
          f'{per_cpu_s:>8,.0f} per CPU second')

  with tempfile.TemporaryDirectory() as tmp:
    write_jpegs(os.path.join(tmp, 'images'), jpeg_size=jpeg_size, num_images=num_images)
    spec = dataclasses.replace(run_spec.data, source='folder', folder=os.path.join(tmp, 'images'),
                               data_dir=os.path.join(tmp, 'data_dir'), stats_max_examples=None,
                               eval_split='train')
    sources.dataset_info(spec)  # Start-up: listing and the bad-file check, cached on disk.
    print(f'== stores: {num_images} generated {jpeg_size[0]}x{jpeg_size[1]} JPEGs, {cores} '
          f'cores, batch {batch_size} ==')
    record('stats pass', *_median_rate(
        lambda: data_statistics.compute_stats(spec, show_progress=False), num_images, repeats))
    for store in ('jpeg', 'raw'):
      stored_spec = dataclasses.replace(spec, prepared_dir=os.path.join(tmp, f'copy_{store}'))
      record(f'prepare --format={store}', *_median_rate(
          lambda: sources.prepare_split(stored_spec, 'train', store_format=store),  # pylint: disable=cell-var-from-loop
          num_images, repeats))
      split_dir = os.path.join(stored_spec.prepared_dir, 'train')
      stored = sum(os.path.getsize(os.path.join(split_dir, f)) for f in os.listdir(split_dir))
      results[f'{store}_bytes_per_image'] = stored / num_images
      print(f'{store} store: {stored / num_images:,.0f} bytes per image')
      for augment_on in ('host', 'device'):
        # Statistics: constants, not a pass: any mean image costs the same per batch.
        fed = dataclasses.replace(stored_spec, augment_on=augment_on, statistics='imagenet')
        record(f'train feed, {store} store, {augment_on} augment',
               *_feed_rate(fed, batch_size, batches, warmup))
  return results


def run_decode(*, size: int = 256, num_images: int = 24,
               jpeg_sizes=((500, 375), (640, 480), (1024, 768), (2400, 1632))) -> list:
  """Per JPEG size: the stored size x size uint8 image by a full-size decode against
  `data.decode.decode_at_least` (libjpeg's DCT scaling for large JPEGs), each timed as
  images per CPU second of one thread, and how far apart their pixels are (0-255 levels).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from alexnet_jax.data import decode  # pylint: disable=g-import-not-at-top
  # One thread each: the figure is per core.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  paths = {
      'full size': tf.function(lambda b: decode.to_uint8(decode.resize_and_center_crop(
          tf.ensure_shape(decode.decode(b), [None, None, 3]), size))),
      'DCT-scaled': tf.function(lambda b: decode.decode_stored_uint8(b, size)),
  }
  results = []
  print(f'\n== decode to the stored {size}x{size}, images per CPU second (one thread) ==')
  with tempfile.TemporaryDirectory() as tmp:
    for width, height in jpeg_sizes:
      root = os.path.join(tmp, f'{width}x{height}')
      write_jpegs(root, jpeg_size=(width, height), num_images=num_images)
      blobs = [tf.constant(open(os.path.join(d, f), 'rb').read())
               for d, _, files in os.walk(root) for f in sorted(files)]
      rates = {}
      for name, fn in paths.items():
        for blob in blobs[:2]:
          fn(blob)  # Traces.
        rates[name] = _median_rate(lambda fn=fn: [fn(b).numpy() for b in blobs],
                                   len(blobs), _NUM_WINDOWS)[1]
      diff = np.concatenate([np.abs(paths['full size'](b).numpy().astype(int)
                                    - paths['DCT-scaled'](b).numpy().astype(int)).ravel()
                             for b in blobs])
      r = {'jpeg_size': [width, height], 'full_per_cpu_s': rates['full size'],
           'dct_scaled_per_cpu_s': rates['DCT-scaled'], 'mean_abs_diff': float(diff.mean()),
           'p99_abs_diff': float(np.percentile(diff, 99)), 'max_abs_diff': int(diff.max())}
      results.append(r)
      print(f"{width}x{height}: full size {r['full_per_cpu_s']:,.0f}, DCT-scaled "
            f"{r['dct_scaled_per_cpu_s']:,.0f}; pixels differ by {r['mean_abs_diff']:.2f} on "
            f"average, {r['p99_abs_diff']:.0f} at the 99th percentile, {r['max_abs_diff']} at most")
  return results

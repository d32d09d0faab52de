"""Input-pipeline benchmark: training images/s over a folder of generated JPEGs.

`run` writes `num_images` JPEGs of one size into a temporary folder source, builds the
TRAINING pipeline over them (decode, Sec. 2 resize/crop and mean subtraction, Sec. 4.1
crops, reflections and PCA lighting) and times batches after `warmup` batches. The figure
is the median of several timing windows, so one slow window (a neighbour's burst on a
shared machine) does not move it.
"""

import gc
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from alexnet_jax import input_pipeline

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


def run(config, *, jpeg_size: tuple[int, int], num_images: int, batches: int,
        warmup: int) -> dict:
  """Times the training pipeline of `config` (source switched to the generated folder).

  jpeg_size: (width, height) of the generated JPEGs. batches: timed batches, split into
  windows; warmup: batches run before timing. Returns a JSON-able dict.
  """
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  batch_size = config.batch_size
  if num_images < batch_size:
    raise ValueError(f'num_images {num_images} < batch size {batch_size}.')
  with tempfile.TemporaryDirectory() as tmp:
    write_jpegs(os.path.join(tmp, 'images'), jpeg_size=jpeg_size, num_images=num_images)
    data_cfg = config.data.copy_and_resolve_references()
    data_cfg.source = 'folder'
    data_cfg.folder = os.path.join(tmp, 'images')
    data_cfg.data_dir = os.path.join(tmp, 'data_dir')
    # Constants, not a statistics pass over the generated images: the pass is not what is
    # timed, and any mean image costs the same per batch.
    data_cfg.statistics = 'imagenet'
    it = input_pipeline.train_batches(data_cfg, global_batch_size=batch_size, seed=0)
    for _ in range(warmup):
      next(it)
    per_window = max(1, batches // _NUM_WINDOWS)
    rates = []
    for _ in range(max(1, batches // per_window)):
      start = time.perf_counter()
      for _ in range(per_window):
        batch = next(it)
      rates.append(per_window * batch['images'].shape[0] / (time.perf_counter() - start))
    del it  # Stops the prefetching threads before their files are deleted.
    gc.collect()
  images_per_s = statistics.median(rates)
  result = {
      'jpeg_size': list(jpeg_size), 'images_per_s': images_per_s,
      'per_core': images_per_s / cores, 'cores': cores, 'batch_size': batch_size,
      'crop_size': data_cfg.crop_size, 'lighting': data_cfg.lighting,
      'num_images': num_images, 'batches': batches, 'warmup': warmup,
      'window_rates': rates,
  }
  print(f'input pipeline, {jpeg_size[0]}x{jpeg_size[1]} JPEGs: {images_per_s:.0f} images/s '
        f'({images_per_s / cores:.0f} per core, {cores} cores, batch {batch_size}, '
        f'crop {data_cfg.crop_size}, lighting {data_cfg.lighting})')
  return result

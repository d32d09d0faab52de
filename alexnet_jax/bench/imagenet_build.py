"""How long the ImageNet build takes, and how much disk it needs, scaled to ILSVRC-2012.

  python -m alexnet_jax.bench.imagenet_build --images_per_class=20 --val_images=1000 \
      --json=imagenet_build.json

`python -m alexnet_jax.data.build --config=configs/paper.py` runs TFDS's `imagenet2012`
builder on the two tars of the manual download. This bench writes fake tars laid out like
the real ones into a temporary manual_dir and times that same build
(`alexnet_jax.data.build.build`, with `config.data.statistics='imagenet'`: the statistics
pass is measured by `bench --mode=input`):

- ILSVRC2012_img_train.tar: one tar per class, named by the class's synset
  (n01440764.tar, ...; the 1000 synsets of TFDS's bundled labels.txt), each holding
  `images_per_class` JPEGs named <synset>_<k>.JPEG. TFDS takes the label from the inner
  tar's name. The 22 CMYK JPEGs and the one PNG that TFDS re-encodes by name (its
  CMYK_IMAGES and PNG_IMAGES) are written as such, in place of image 1 of their class.
- ILSVRC2012_img_val.tar: ILSVRC2012_val_00000001.JPEG ... (the first `val_images` of the
  real names), in shuffled order. TFDS labels them by their index in sorted-name order from
  its bundled validation_labels.txt, so only the first names of the real set get the right
  labels.
- No ILSVRC2012_img_test.tar: TFDS logs a warning and builds train and validation only.

The JPEGs resemble photographs in size and entropy (500x375 and its portrait and 3:2
variants, quality 90, smooth colour fields plus 1/f texture and sensor-like noise, the
noise calibrated so that the mean file is `--target_kib`). TFDS does not decode them (it
copies the bytes into TFRecords), so the build's cost follows the bytes and the number of
images, not what is in them. Generation is not timed.

It measures the build's wall and CPU time, the tars' and the built dataset's bytes, the
peak bytes under the data dir during the build (TFDS's shuffle buckets: above 1 GB of
examples per split it spills them to ~1000 temporary files beside the output), and the peak
resident memory, then projects them to ILSVRC-2012 (1,281,167 train + 50,000 validation
images): time and image counts linearly in images, bytes per image scaled by the real
tars' bytes per image over the fake tars' (train and validation separately).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw

# ILSVRC-2012 as TFDS knows it (tensorflow_datasets/datasets/imagenet2012/checksums.tsv
# gives the tars' exact bytes).
NUM_TRAIN = 1_281_167
NUM_VAL = 50_000
NUM_CLASSES = 1000
TRAIN_TAR_BYTES = 147_897_477_120
VAL_TAR_BYTES = 6_744_924_160
TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'


def _tfds_imagenet():
  """TFDS's imagenet2012 builder module (its CMYK and PNG lists) and its common module."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as b
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common as c
  return b, c


def synsets() -> list[str]:
  """The 1000 class synsets in TFDS's label order (its bundled labels.txt)."""
  _, common = _tfds_imagenet()
  with open(os.fspath(common.label_names_file())) as f:
    return f.read().split()


def validation_labels() -> list[str]:
  """The synset of ILSVRC2012_val_{i:08d}.JPEG at [i - 1] (TFDS's validation_labels.txt)."""
  _, common = _tfds_imagenet()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = tfds.core.tfds_path(common._VALIDATION_LABELS_FNAME)  # pylint: disable=protected-access
  with open(os.fspath(path)) as f:
    return f.read().split()


def val_name(index: int) -> str:
  """The real name of validation image `index` (1-based)."""
  return f'ILSVRC2012_val_{index:08d}.JPEG'


def train_name(synset: str, k: int) -> str:
  return f'{synset}_{k}.JPEG'


def special_files() -> dict[str, str]:
  """The train files TFDS re-encodes by name: {file name: 'cmyk' | 'png'}."""
  builder, _ = _tfds_imagenet()
  special = {name: 'cmyk' for name in builder.CMYK_IMAGES}
  special.update({name: 'png' for name in builder.PNG_IMAGES})
  return special


def _pink_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
  """A size x size field with a 1/f^beta amplitude spectrum, unit standard deviation."""
  fy = np.fft.fftfreq(size)[:, None]
  fx = np.fft.rfftfreq(size)[None, :]
  f = np.sqrt(fx * fx + fy * fy)
  f[0, 0] = 1.0
  spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f ** beta
  spectrum[0, 0] = 0.0
  field = np.fft.irfft2(spectrum, s=(size, size))
  return (field / field.std()).astype(np.float32)


class PhotoJpegs:
  """JPEGs whose size and entropy resemble photographs', cheaply.

  Each image: a smooth colour field (a few random colours, bicubically enlarged) + a
  mid-scale one, 1/f texture (a random crop of a bank of pink-noise fields, tinted per
  image) and fine noise (a crop of a bank of Gaussian noise). `amplitude` scales the texture
  and noise, so the file size; `calibrate` picks it for a target mean size.
  """

  def __init__(self, seed: int = 0, quality: int = 90, amplitude: float = 1.0,
               bank: int = 6, bank_size: int = 640):
    rng = np.random.default_rng(seed)
    self.quality, self.amplitude, self._bank_size = quality, amplitude, bank_size
    self._texture = [_pink_noise(rng, bank_size, 1.0) for _ in range(bank)]
    self._noise = [rng.standard_normal((bank_size, bank_size, 3)).astype(np.float32)
                   for _ in range(bank)]

  def _crop(self, rng, bank, width, height):
    field = bank[rng.integers(len(bank))]
    y = rng.integers(self._bank_size - height + 1)
    x = rng.integers(self._bank_size - width + 1)
    field = field[y:y + height, x:x + width]
    return field[::-1] if rng.integers(2) else field

  def pixels(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A height x width x 3 uint8 image."""
    if width > self._bank_size or height > self._bank_size:
      raise ValueError(f'{width}x{height} is larger than the noise bank ({self._bank_size})')
    coarse = rng.integers(0, 256, (3, 4, 3)).astype(np.float32)
    coarse = coarse.mean(-1, keepdims=True) * 0.4 + coarse * 0.6  # Photographs' muted colours.
    coarse = Image.fromarray(coarse.astype(np.uint8))
    medium = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    # Objects: sharp-edged ellipses and polygons over the background.
    layer = Image.new('RGBA', (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(4, 16))):
      x, y = rng.integers(0, width), rng.integers(0, height)
      rx, ry = rng.integers(width // 30 + 1, width // 4 + 2), rng.integers(height // 30 + 1, height // 4 + 2)
      colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(120, 256)),)
      if rng.integers(2):
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)
      else:
        draw.polygon([(int(x + rx * np.cos(t)), int(y + ry * np.sin(t)))
                      for t in np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))],
                     fill=colour)
    background = Image.blend(coarse.resize((width, height), Image.BICUBIC),
                             medium.resize((width, height), Image.BICUBIC), 0.25)
    image = np.asarray(Image.alpha_composite(background.convert('RGBA'), layer).convert('RGB'),
                       np.float32)
    tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    detail = self.amplitude * rng.lognormal(0.0, 0.3)  # Some images busier than others.
    image += (16.0 * detail) * self._crop(rng, self._texture, width, height)[..., None] * tint
    image += (2.0 * detail) * self._crop(rng, self._noise, width, height)
    return np.clip(image, 0, 255).astype(np.uint8)

  def encode(self, pixels: np.ndarray, kind: str = 'jpeg') -> bytes:
    """JPEG bytes (kind 'jpeg'), a CMYK JPEG ('cmyk') or PNG bytes ('png')."""
    out = io.BytesIO()
    image = Image.fromarray(pixels)
    if kind == 'png':
      image.save(out, format='PNG')
    elif kind == 'cmyk':
      image.convert('CMYK').save(out, format='JPEG', quality=self.quality)
    else:
      image.save(out, format='JPEG', quality=self.quality)
    return out.getvalue()

  def jpeg(self, rng: np.random.Generator, width: int, height: int, kind: str = 'jpeg') -> bytes:
    return self.encode(self.pixels(rng, width, height), kind)

  def calibrate(self, target_bytes: float, width: int, height: int, samples: int = 40,
                seed: int = 1) -> float:
    """Sets `amplitude` so that the mean JPEG of `samples` images is near target_bytes."""
    def mean_size(amplitude):
      self.amplitude = amplitude
      rng = np.random.default_rng(seed)
      return np.mean([len(self.jpeg(rng, width, height)) for _ in range(samples)])
    lo, hi = 0.0, 1.0
    while mean_size(hi) < target_bytes and hi < 64:
      lo, hi = hi, hi * 2
    for _ in range(12):
      mid = (lo + hi) / 2
      if mean_size(mid) < target_bytes:
        lo = mid
      else:
        hi = mid
    self.amplitude = (lo + hi) / 2
    return self.amplitude


def _shape(rng: np.random.Generator, width: int, height: int, vary: bool) -> tuple[int, int]:
  """(width, height): landscape mostly, as in ILSVRC; some portrait and 3:2 images."""
  if not vary:
    return width, height
  u = rng.random()
  if u < 0.15:
    return height, width
  if u < 0.35:
    return width, round(width * 2 / 3)
  return width, height


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size, info.mtime, info.mode = len(data), 1_330_000_000, 0o644
  tar.addfile(info, io.BytesIO(data))


def write_tars(manual_dir: str, images_per_class: int, val_images: int, *,
               width: int = 500, height: int = 375, vary_shape: bool = True,
               quality: int = 90, target_kib: float | None = 110.0, seed: int = 0,
               special: bool = True, classes: list[str] | None = None,
               progress: bool = False) -> dict:
  """Writes ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into manual_dir.

  Returns what it wrote: image counts, JPEG and tar bytes, the calibrated noise amplitude,
  the val images' labels ({file name: synset}) and the seconds it took.
  """
  start = time.perf_counter()
  if val_images > NUM_VAL:
    raise ValueError(f'val_images {val_images} > the {NUM_VAL} names of ILSVRC-2012')
  classes = classes or synsets()
  os.makedirs(manual_dir, exist_ok=True)
  gen = PhotoJpegs(seed=seed, quality=quality)
  if target_kib:
    gen.calibrate(target_kib * 1024, width, height)
  rng = np.random.default_rng(seed)
  specials = special_files() if special else {}
  train_jpeg_bytes = val_jpeg_bytes = 0
  kinds = {'cmyk': 0, 'png': 0}
  train_path = os.path.join(manual_dir, TRAIN_TAR)
  with tarfile.open(train_path, 'w', format=tarfile.GNU_FORMAT) as outer:
    for c, synset in enumerate(classes):
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode='w', format=tarfile.GNU_FORMAT) as inner:
        names = [train_name(synset, k) for k in range(1, images_per_class + 1)]
        extra = sorted(n for n in specials if n.startswith(synset + '_'))
        names[:len(extra)] = extra[:len(names)]  # In place of the first images.
        for name in names:
          kind = specials.get(name, 'jpeg')
          data = gen.jpeg(rng, *_shape(rng, width, height, vary_shape), kind=kind)
          if kind != 'jpeg':
            kinds[kind] += 1
          train_jpeg_bytes += len(data)
          _add(inner, name, data)
      _add(outer, f'{synset}.tar', inner_bytes.getvalue())
      if progress and (c + 1) % 100 == 0:
        print(f'  train tar: {c + 1}/{len(classes)} classes, '
              f'{time.perf_counter() - start:.0f}s', flush=True)
  labels = validation_labels()
  order = list(range(1, val_images + 1))
  random.Random(seed).shuffle(order)  # TFDS labels by sorted name, not by tar order.
  val_path = os.path.join(manual_dir, VAL_TAR)
  with tarfile.open(val_path, 'w', format=tarfile.GNU_FORMAT) as tar:
    for i in order:
      data = gen.jpeg(rng, *_shape(rng, width, height, vary_shape))
      val_jpeg_bytes += len(data)
      _add(tar, val_name(i), data)
  num_train = images_per_class * len(classes)
  return {
      'num_train': num_train, 'num_val': val_images, 'num_classes': len(classes),
      'train_tar_bytes': os.path.getsize(train_path), 'val_tar_bytes': os.path.getsize(val_path),
      'train_jpeg_bytes': train_jpeg_bytes, 'val_jpeg_bytes': val_jpeg_bytes,
      'mean_train_jpeg_bytes': train_jpeg_bytes / max(num_train, 1),
      'mean_val_jpeg_bytes': val_jpeg_bytes / max(val_images, 1),
      're_encoded_files': kinds, 'noise_amplitude': gen.amplitude,
      'jpeg_quality': quality, 'image_size': [width, height], 'vary_shape': vary_shape,
      'val_labels': {val_name(i): labels[i - 1] for i in range(1, val_images + 1)},
      'generate_s': time.perf_counter() - start,
  }


def _tree_bytes(path: str) -> tuple[int, int]:
  """(bytes, files) under path; files that vanish while walking are skipped."""
  total = count = 0
  stack = [path]
  while stack:
    try:
      entries = list(os.scandir(stack.pop()))
    except OSError:
      continue
    for e in entries:
      try:
        if e.is_dir(follow_symlinks=False):
          stack.append(e.path)
        else:
          total += e.stat(follow_symlinks=False).st_size
          count += 1
      except OSError:
        pass
  return total, count


def evict_from_cache(path: str) -> None:
  """Writes path to disk and drops it from the page cache (this file's pages only), so the
  build reads it from the disk, as it would the real 155 GB."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
  finally:
    os.close(fd)


def fsync_tree(path: str) -> float:
  """Seconds to write the files under path to the disk (fsync each)."""
  start = time.perf_counter()
  for d, _, files in os.walk(path):
    for name in files:
      fd = os.open(os.path.join(d, name), os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
  return time.perf_counter() - start


def _rss_bytes() -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) * 1024
  return 0


class _Monitor(threading.Thread):
  """Samples the bytes under the data dir and the resident memory every `interval` s."""

  def __init__(self, path: str, interval: float = 0.5):
    super().__init__(daemon=True)
    self._path, self._interval, self._done = path, interval, threading.Event()
    self.peak_bytes = self.peak_files = self.peak_rss = 0
    self.samples = 0

  def run(self):
    while not self._done.is_set():
      self.sample()
      self._done.wait(self._interval)

  def sample(self):
    size, files = _tree_bytes(self._path)
    self.peak_bytes, self.peak_files = max(self.peak_bytes, size), max(self.peak_files, files)
    self.peak_rss = max(self.peak_rss, _rss_bytes())
    self.samples += 1

  def stop(self):
    self._done.set()
    self.join()
    self.sample()


def _split_marks():
  """Records when TFDS starts and finishes generating each split's examples (it builds
  them one after the other: generate, shuffle, write), by wrapping the builder's
  _generate_examples. Returns the dict it fills and a function that undoes the wrap."""
  builder, _ = _tfds_imagenet()
  original = builder.Builder._generate_examples  # pylint: disable=protected-access
  marks = {}

  def wrapped(self, archive, validation_labels=None, labels_exist=True):
    split = 'test' if not labels_exist else 'validation' if validation_labels else 'train'
    marks[split + '_start'] = time.perf_counter()
    yield from original(self, archive, validation_labels=validation_labels,
                        labels_exist=labels_exist)
    marks[split + '_generated'] = time.perf_counter()

  builder.Builder._generate_examples = wrapped  # pylint: disable=protected-access

  def undo():
    builder.Builder._generate_examples = original  # pylint: disable=protected-access
  return marks, undo


def measure_build(manual_dir: str, data_dir: str, cold: bool = True) -> dict:
  """Runs alexnet_jax.data.build.build for configs/paper.py on manual_dir, into data_dir.

  cold: first drop the tars from the page cache. The build's output is then fsynced
  (`sync_s`, not part of `build_s`): a 150 GB build cannot stay in the page cache.
  """
  from alexnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax.data import build as build_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.paper_config()
  config.data.data_dir = data_dir
  config.data.manual_dir = manual_dir
  config.data.statistics = 'imagenet'
  os.makedirs(data_dir, exist_ok=True)
  if cold:
    for name in (TRAIN_TAR, VAL_TAR):
      evict_from_cache(os.path.join(manual_dir, name))
  monitor = _Monitor(data_dir)
  marks, undo = _split_marks()
  rusage = resource.getrusage(resource.RUSAGE_SELF)
  children = os.times()
  cpu0 = time.process_time()
  monitor.start()
  wall0 = time.perf_counter()
  try:
    result = build_lib.build(config.data)
  finally:
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    monitor.stop()
    undo()
  sync_s = fsync_tree(data_dir)
  after = os.times()
  rusage_after = resource.getrusage(resource.RUSAGE_SELF)
  child_cpu = ((after.children_user - children.children_user)
               + (after.children_system - children.children_system))
  built_bytes, built_files = _tree_bytes(data_dir)
  splits = {}
  if 'train_start' in marks and 'validation_start' in marks:
    # Train: from its first example to the start of validation (its shuffle and write
    # included); validation: from its start to the end of the build.
    splits['train_s'] = marks['validation_start'] - marks['train_start']
    splits['validation_s'] = wall0 + result['build_s'] - marks['validation_start']
    splits['before_first_split_s'] = marks['train_start'] - wall0
    splits['train_generate_s'] = marks.get('train_generated', 0) - marks['train_start']
  return {
      'result': {k: v for k, v in result.items()},
      'wall_s': wall, 'build_s': result['build_s'], 'sync_s': sync_s, 'cold_tars': cold,
      'cpu_s': cpu, 'children_cpu_s': child_cpu,
      'user_s': rusage_after.ru_utime - rusage.ru_utime,
      'system_s': rusage_after.ru_stime - rusage.ru_stime,
      'splits': splits,
      'built_bytes': built_bytes, 'built_files': built_files,
      'dataset_bytes': result.get('data_bytes'),
      'peak_data_dir_bytes': monitor.peak_bytes, 'peak_data_dir_files': monitor.peak_files,
      'peak_rss_bytes': monitor.peak_rss, 'monitor_samples': monitor.samples,
  }


def project(gen: dict, build: dict) -> dict:
  """ILSVRC-2012's numbers from the measured ones: time linear in images; bytes per image
  scaled by the real tars' bytes per image over the fake ones' (each split by its own)."""
  n = gen['num_train'] + gen['num_val']
  train_scale = (TRAIN_TAR_BYTES / NUM_TRAIN) / (gen['train_tar_bytes'] / gen['num_train'])
  val_scale = (VAL_TAR_BYTES / NUM_VAL) / (gen['val_tar_bytes'] / gen['num_val'])
  # The built dataset holds each split's JPEG bytes plus a small per-record overhead; apply
  # each split's scale to its share of the build (its share of the JPEG bytes).
  jpeg = gen['train_jpeg_bytes'] + gen['val_jpeg_bytes']
  train_share = gen['train_jpeg_bytes'] / jpeg
  built = build['built_bytes']
  built_train = built * train_share / gen['num_train'] * train_scale * NUM_TRAIN
  built_val = built * (1 - train_share) / gen['num_val'] * val_scale * NUM_VAL
  # Peak under the data dir: the train split dominates (its shuffle buckets, then its
  # shards while the buckets are read and deleted); scale it as the train split.
  peak = build['peak_data_dir_bytes'] / built * (built_train + built_val)
  per_image_s = build['build_s'] / n
  with_sync_s = build['build_s'] + build['sync_s']
  bytes_ratio = (TRAIN_TAR_BYTES + VAL_TAR_BYTES) / (gen['train_tar_bytes'] + gen['val_tar_bytes'])
  out = {
      'scale_train_bytes_per_image': train_scale, 'scale_val_bytes_per_image': val_scale,
      'build_hours': per_image_s * (NUM_TRAIN + NUM_VAL) / 3600,
      'build_hours_by_bytes': build['build_s'] * bytes_ratio / 3600,
      'build_and_sync_hours': with_sync_s / n * (NUM_TRAIN + NUM_VAL) / 3600,
      'cpu_hours': (build['cpu_s'] + build['children_cpu_s']) / n * (NUM_TRAIN + NUM_VAL) / 3600,
      'built_gb': (built_train + built_val) / 1e9,
      'tar_gb': (TRAIN_TAR_BYTES + VAL_TAR_BYTES) / 1e9,
      'peak_data_dir_gb': peak / 1e9,
  }
  out['disk_needed_gb'] = out['tar_gb'] + out['peak_data_dir_gb']
  if build['splits']:
    s = build['splits']
    out['build_hours_by_split'] = (s['train_s'] / gen['num_train'] * NUM_TRAIN
                                   + s['validation_s'] / gen['num_val'] * NUM_VAL) / 3600
  return out


def _machine() -> dict:
  model = ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  try:
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), check=False).stdout.strip()
  except OSError:
    head = ''
  return {'cpu_model': model, 'cpu_count': os.cpu_count(),
          'cpu_affinity': len(os.sched_getaffinity(0)), 'load_average': list(os.getloadavg()),
          'git_head': head}


def _table(gen: dict, build: dict, proj: dict) -> str:
  n = gen['num_train'] + gen['num_val']
  gb = 1e9
  s = build['splits']
  rows = [
      ('images (train + val)', f"{gen['num_train']:,} + {gen['num_val']:,}",
       f'{NUM_TRAIN:,} + {NUM_VAL:,}'),
      ('mean JPEG, train / val (KiB)',
       f"{gen['mean_train_jpeg_bytes'] / 1024:.1f} / {gen['mean_val_jpeg_bytes'] / 1024:.1f}",
       f'{TRAIN_TAR_BYTES / NUM_TRAIN / 1024:.1f} / {VAL_TAR_BYTES / NUM_VAL / 1024:.1f} (tar bytes/image)'),
      ('tars (GB)', f"{(gen['train_tar_bytes'] + gen['val_tar_bytes']) / gb:.3f}",
       f"{proj['tar_gb']:.1f}"),
      ('build wall time', f"{build['build_s']:.1f} s",
       f"{proj['build_hours']:.2f} h (by bytes: {proj['build_hours_by_bytes']:.2f} h)"),
      ('build + fsync of its output', f"{build['build_s'] + build['sync_s']:.1f} s",
       f"{proj['build_and_sync_hours']:.2f} h"),
      ('build CPU time (all threads)', f"{build['cpu_s'] + build['children_cpu_s']:.1f} s",
       f"{proj['cpu_hours']:.2f} h"),
      ('build rate', f"{n / build['build_s']:.0f} images/s, "
       f"{(gen['train_tar_bytes'] + gen['val_tar_bytes']) / build['build_s'] / 2**20:.0f} MiB/s", ''),
  ]
  if s:
    rows.append(('  train / val split', f"{s['train_s']:.1f} s / {s['validation_s']:.1f} s",
                 f"{proj['build_hours_by_split']:.2f} h by split"))
  rows += [
      ('built dataset (GB)', f"{build['built_bytes'] / gb:.3f} "
       f"({build['built_bytes'] / n / 1024:.1f} KiB/image)", f"{proj['built_gb']:.1f}"),
      ('peak under data_dir (GB)', f"{build['peak_data_dir_bytes'] / gb:.3f}",
       f"{proj['peak_data_dir_gb']:.1f}"),
      ('disk: tars + peak (GB)', f"{(gen['train_tar_bytes'] + gen['val_tar_bytes'] + build['peak_data_dir_bytes']) / gb:.3f}",
       f"{proj['disk_needed_gb']:.1f}"),
      ('peak resident memory (GiB)', f"{build['peak_rss_bytes'] / 2**30:.2f}", ''),
  ]
  w0 = max(len(r[0]) for r in rows)
  w1 = max(len(r[1]) for r in rows)
  lines = [f"{'':<{w0}}  {'measured':<{w1}}  ILSVRC-2012 (projected)"]
  lines += [f'{a:<{w0}}  {b:<{w1}}  {c}' for a, b, c in rows]
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  # Import TensorFlow, TFDS and the build before any thread starts (CPython 3.11.7 can fail
  # an import made while threads run).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,unused-import
  from alexnet_jax.data import build as _  # pylint: disable=g-import-not-at-top,unused-import
  _tfds_imagenet()
  probe = tempfile.mkdtemp(prefix='tfds_probe_')
  tfds.builder('imagenet2012', data_dir=probe)
  shutil.rmtree(probe, ignore_errors=True)
  machine = _machine()
  root = f.keep or tempfile.mkdtemp(prefix='imagenet_build_')
  manual_dir, data_dir = os.path.join(root, 'manual'), os.path.join(root, 'data')
  if os.path.exists(data_dir):
    shutil.rmtree(data_dir)
  try:
    params = {'images_per_class': f.images_per_class, 'val_images': f.val_images,
              'width': f.width, 'height': f.height, 'quality': f.quality,
              'target_kib': f.target_kib, 'seed': f.seed}
    saved = os.path.join(manual_dir, 'generated.json')
    gen = None
    if f.keep and os.path.exists(saved):  # Tars kept from an earlier run with these flags.
      with open(saved) as fp:
        kept = json.load(fp)
      if kept.get('params') == params:
        gen = kept['generated']
        print(f'reusing the tars in {manual_dir}', flush=True)
    if gen is None:
      print(f'generating {f.images_per_class} x {NUM_CLASSES} train + {f.val_images} val '
            f'images in {manual_dir} ...', flush=True)
      gen = write_tars(manual_dir, f.images_per_class, f.val_images, width=f.width,
                       height=f.height, quality=f.quality, target_kib=f.target_kib,
                       seed=f.seed, progress=True)
      gen.pop('val_labels')
      with open(saved, 'w') as fp:
        json.dump({'params': params, 'generated': gen}, fp)
    print(f"generated in {gen['generate_s']:.0f}s: mean JPEG {gen['mean_train_jpeg_bytes'] / 1024:.1f} "
          f"KiB train, {gen['mean_val_jpeg_bytes'] / 1024:.1f} KiB val (noise amplitude "
          f"{gen['noise_amplitude']:.3f}); tars {gen['train_tar_bytes'] / 1e9:.3f} + "
          f"{gen['val_tar_bytes'] / 1e9:.3f} GB", flush=True)
    load_before = os.getloadavg()
    print(f'load average before the build: {load_before[0]:.2f} {load_before[1]:.2f} '
          f'{load_before[2]:.2f}; building ...', flush=True)
    build = measure_build(manual_dir, data_dir, cold=f.cold)
    load_after = os.getloadavg()
  finally:
    if not f.keep:
      shutil.rmtree(root, ignore_errors=True)
  proj = project(gen, build)
  report = {
      'command': ' '.join(['python -m alexnet_jax.bench.imagenet_build']
                          + [shlex.quote(a) for a in sys.argv[1:]]),
      'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
      **machine,
      'load_average_before_build': list(load_before), 'load_average_after_build': list(load_after),
      'generated': gen,
      'build': build,
      'rates': {
          'images_per_s': (gen['num_train'] + gen['num_val']) / build['build_s'],
          'tar_mib_per_s': (gen['train_tar_bytes'] + gen['val_tar_bytes']) / build['build_s'] / 2**20,
          'built_bytes_per_image': build['built_bytes'] / (gen['num_train'] + gen['num_val']),
          'built_over_tar_bytes': build['built_bytes'] / (gen['train_tar_bytes'] + gen['val_tar_bytes']),
          'peak_over_built_bytes': build['peak_data_dir_bytes'] / build['built_bytes'],
      },
      'ilsvrc2012_projection': proj,
      'assumptions': (
          'Build time linear in images (build_hours; build_hours_by_bytes scales by tar bytes '
          'instead); bytes per image scaled by the real tars\' bytes per image over the fake '
          'tars\' (train and val separately: 115.4 KB and 134.9 KB per image in the real tars); '
          'this machine\'s cores and disk; the tars read from the disk (dropped from the page '
          'cache first, unless --nocold); build_and_sync_hours adds the fsync of the output.'),
  }
  print()
  print(_table(gen, build, proj))
  print()
  print(json.dumps(report, indent=2))
  if f.json:
    with open(f.json, 'w') as out:
      json.dump(report, out, indent=2)


if __name__ == '__main__':
  flags.DEFINE_integer('images_per_class', 20, 'Train images per class (1000 classes).')
  flags.DEFINE_integer('val_images', 1000, 'Validation images (the first of the real names).')
  flags.DEFINE_integer('width', 500, 'Landscape image width.')
  flags.DEFINE_integer('height', 375, 'Landscape image height.')
  flags.DEFINE_integer('quality', 90, 'JPEG quality.')
  flags.DEFINE_float('target_kib', 110.0, 'Calibrate the noise for this mean JPEG size (KiB).')
  flags.DEFINE_integer('seed', 0, 'Random seed of the images.')
  flags.DEFINE_bool('cold', True, 'Drop the tars from the page cache before the build.')
  flags.DEFINE_string('json', None, 'Also write the JSON report to this file.')
  flags.DEFINE_string('keep', None, 'Generate into this folder (manual/ and data/) and keep '
                      'it; by default a temporary folder, removed at the end.')
  app.run(main)

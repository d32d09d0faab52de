"""Real-folder behaviour at the scale where it shows: class mixing of a sorted folder bigger
than the shuffle buffer, prepared copies and statistics keyed by the dataset, automatic
statistics, and empty class folders."""

import math
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.config import RunSpec
from alexnet_jax.data import pipeline, sources, statistics
from alexnet_jax.data.spec import DataSpec
from configs import default

CLASSES, PER_CLASS, BATCH = 200, 20, 128


def _write_classes(root, per_class: dict, size=8, level=None):
  """root/<split>/<class>/<i>.jpg for {split: {class: count}}; tiny images of one level
  (random levels if None)."""
  rng = np.random.default_rng(0)
  for split, counts in per_class.items():
    for name, count in counts.items():
      os.makedirs(root / split / name, exist_ok=True)
      for i in range(count):
        value = rng.integers(0, 256) if level is None else level
        Image.fromarray(np.full([size, size, 3], value, np.uint8)).save(
            root / split / name / f'{i:03d}.jpg', quality=95)
  return str(root)


@pytest.fixture(scope='module')
def big_folder(tmp_path_factory):
  """200 classes x 20 images: 4,000 files, sorted by class on disk."""
  root = tmp_path_factory.mktemp('imagenet_like')
  names = [f'n{k:08d}' for k in range(CLASSES)]
  return _write_classes(root, {'train': {n: PER_CLASS for n in names},
                               'val': {n: 1 for n in names[:4]}})


def _small_cfg(tmp_path, folder, **overrides):
  cfg = default.get_config().data
  cfg.source = 'folder'
  cfg.folder = folder
  cfg.data_dir = str(tmp_path / 'data_dir')
  cfg.stored_size = 32  # Labels are what these tests look at; small images are fast.
  cfg.crop_size = 24
  cfg.lighting = 'none'
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _distinct_classes_law(n, classes, per_class, batch):
  """Mean and standard deviation of the number of distinct classes in `batch` examples
  drawn uniformly without replacement from `n` = classes x per_class examples."""
  def p_missing(k):  # P(k given classes all absent from the batch).
    return math.prod((n - k * per_class - i) / (n - i) for i in range(batch))
  q1, q2 = p_missing(1), p_missing(2)
  mean = classes * (1 - q1)
  var = classes * q1 * (1 - q1) + classes * (classes - 1) * (q2 - q1 * q1)
  return mean, math.sqrt(var)


def _assert_batches_span_like_random_draws(data_cfg, process_count=1, batches=3):
  mean, sd = _distinct_classes_law(CLASSES * PER_CLASS, CLASSES, PER_CLASS,
                                   BATCH // process_count)
  for p in range(process_count):
    it = pipeline.train_batches(DataSpec.from_config(data_cfg), global_batch_size=BATCH,
                                seed=0, process_index=p, process_count=process_count)
    spans = [len(set(next(it)['labels'].tolist())) for _ in range(batches)]
    # A sorted folder through a 512-example buffer gave 32-42 classes, against about 96.
    assert min(spans) > mean - 4 * sd, (spans, mean, sd)
    assert np.mean(spans) > mean - 2 * sd, (spans, mean, sd)


@pytest.mark.parametrize('process_count', [1, 2])
def test_sorted_folder_bigger_than_the_buffer_gives_mixed_batches(big_folder, tmp_path,
                                                                  process_count):
  data_cfg = _small_cfg(tmp_path, big_folder, shuffle_buffer=512, statistics='imagenet')
  _assert_batches_span_like_random_draws(data_cfg, process_count)


def test_prepared_copy_of_a_sorted_folder_gives_mixed_batches(big_folder, tmp_path):
  data_cfg = _small_cfg(tmp_path, big_folder, shuffle_buffer=512, statistics='imagenet')
  sources.prepare_split(DataSpec.from_config(data_cfg), 'train')
  sources.prepare_split(DataSpec.from_config(data_cfg), 'validation')
  source = sources.get_source(DataSpec.from_config(data_cfg))
  assert isinstance(source, sources.PreparedSource)  # The copy is what is read.
  _assert_batches_span_like_random_draws(data_cfg)


def test_folder_epochs_are_new_permutations(tmp_path):
  folder = _write_classes(tmp_path / 'images', {'train': {'a': 30, 'b': 34},
                                                'val': {'a': 1}})
  data_cfg = _small_cfg(tmp_path, folder, statistics='imagenet')
  it = pipeline.train_batches(DataSpec.from_config(data_cfg), global_batch_size=64, seed=0)
  epochs = [next(it) for _ in range(3)]
  # Every epoch holds each image exactly once (the labels' multiset), in a new order.
  for e in epochs:
    assert sorted(e['labels'].tolist()) == [0] * 30 + [1] * 34
  orders = [e['labels'].tolist() for e in epochs]
  assert orders[0] != orders[1] and orders[1] != orders[2]


# ------------------------------------------------------- copies keyed by the dataset


def _dark_and_bright_folders(tmp_path):
  """Folder A: 18 dark images per class 'ant', 'bee'; folder B: 'ant' 18, 'cow' 17, bright."""
  a = _write_classes(tmp_path / 'A', {'train': {'ant': 18, 'bee': 18}, 'val': {'ant': 2}},
                     size=32, level=40)
  b = _write_classes(tmp_path / 'B', {'train': {'ant': 18, 'cow': 17}, 'val': {'cow': 2}},
                     size=32, level=220)
  return a, b


def test_prepared_copy_and_stats_of_folder_a_are_never_read_for_folder_b(tmp_path):
  a, b = _dark_and_bright_folders(tmp_path)
  cfg_a = _small_cfg(tmp_path, a)
  for split in ('train', 'validation'):
    sources.prepare_split(DataSpec.from_config(cfg_a), split)
  stats_a = statistics.load_stats(DataSpec.from_config(cfg_a))
  cfg_b = _small_cfg(tmp_path, b)  # The same data_dir.
  info = sources.dataset_info(DataSpec.from_config(cfg_b))
  assert (info.num_train, info.class_names) == (35, ['ant', 'cow'])
  stats_b = statistics.load_stats(DataSpec.from_config(cfg_b))
  assert (sources.stats_path(DataSpec.from_config(cfg_a))
          != sources.stats_path(DataSpec.from_config(cfg_b)))
  # Each mean image is its own folder's: flat 40 and flat 220 (JPEG-exact for flat images).
  np.testing.assert_allclose(stats_a.mean_image, 40, atol=1)
  np.testing.assert_allclose(stats_b.mean_image, 220, atol=1)
  batch = next(pipeline.train_batches(
      DataSpec.from_config(_small_cfg(tmp_path, b, statistics='imagenet', flip=False)),
      global_batch_size=35, seed=0))
  restored = batch['images'] + statistics.IMAGENET_RGB_MEAN  # B's pixels, not A's.
  np.testing.assert_allclose(restored, 220, atol=1)
  assert sorted(batch['labels'].tolist()) == [0] * 18 + [1] * 17


@pytest.mark.parametrize('change', ['gains', 'loses'])
def test_folder_changed_after_prepare_stops_and_stats_are_recomputed(tmp_path, change):
  a, _ = _dark_and_bright_folders(tmp_path)
  data_cfg = _small_cfg(tmp_path, a)
  for split in ('train', 'validation'):
    sources.prepare_split(DataSpec.from_config(data_cfg), split)
  path = statistics.write_stats(DataSpec.from_config(data_cfg))
  assert sources.dataset_info(DataSpec.from_config(data_cfg)).num_train == 36
  if change == 'gains':
    Image.fromarray(np.full([32, 32, 3], 200, np.uint8)).save(
        os.path.join(a, 'train', 'bee', 'new.jpg'))
    expected, mean = 37, (36 * 40 + 200) / 37
  else:
    os.remove(os.path.join(a, 'train', 'bee', '000.jpg'))
    os.remove(os.path.join(a, 'train', 'ant', '001.jpg'))
    expected, mean = 34, 40
  with pytest.raises(ValueError) as e:
    sources.dataset_info(DataSpec.from_config(data_cfg))
  message = str(e.value)
  assert '\n' not in message and 'alexnet_jax.data.prepare' in message and 'use_prepared' in message
  assert '36 files' in message
  # Without the stale copy, the statistics of the folder as it is now are computed again.
  data_cfg.use_prepared = False
  assert sources.dataset_info(DataSpec.from_config(data_cfg)).num_train == expected
  loaded = statistics.load_stats(DataSpec.from_config(data_cfg))
  with np.load(path) as f:
    assert int(f['num_examples']) == expected
  np.testing.assert_allclose(loaded.mean_image, mean, atol=1)


def test_stats_file_of_another_dataset_is_refused(tmp_path):
  a, b = _dark_and_bright_folders(tmp_path)
  path = statistics.write_stats(DataSpec.from_config(_small_cfg(tmp_path, a)))
  with pytest.raises(ValueError, match=r'holds the statistics of folder .*A.*statistics=imagenet'):
    statistics.load_stats(DataSpec.from_config(_small_cfg(tmp_path, b, stats_file=path)))


def test_prepared_copy_is_read_once_the_folder_is_gone_but_not_for_another_path(tmp_path):
  a, _ = _dark_and_bright_folders(tmp_path)
  data_cfg = _small_cfg(tmp_path, a, statistics='imagenet')
  for split in ('train', 'validation'):
    sources.prepare_split(DataSpec.from_config(data_cfg), split)
  copy = sources.prepared_dir(DataSpec.from_config(data_cfg))
  shutil.rmtree(a)
  assert sources.dataset_info(DataSpec.from_config(data_cfg)).num_train == 36
  # The copy of A offered as the prepared copy of a folder that never existed.
  other = _small_cfg(tmp_path, str(tmp_path / 'C'), prepared_dir=copy)
  with pytest.raises(ValueError, match='was not made from split'):
    sources.dataset_info(DataSpec.from_config(other))


# ---------------------------------------------------------------- automatic statistics


def test_missing_statistics_are_computed_with_a_progress_line(tmp_path, capfd):
  rng = np.random.default_rng(1)
  root = tmp_path / 'images'
  images = []
  for i in range(6):  # PNG: lossless, so NumPy sees what the pipeline decodes.
    os.makedirs(root / 'train' / f'c{i % 2}', exist_ok=True)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / 'train' / f'c{i % 2}' / f'{i}.png')
    images.append(image)
  os.makedirs(root / 'val' / 'c0')
  Image.fromarray(images[0]).save(root / 'val' / 'c0' / 'v.png')
  data_cfg = _small_cfg(tmp_path, str(root))
  assert not os.path.exists(sources.stats_path(DataSpec.from_config(data_cfg)))
  loaded = statistics.load_stats(DataSpec.from_config(data_cfg))
  np.testing.assert_allclose(loaded.mean_image, np.mean(images, axis=0), atol=1e-4)
  assert os.path.exists(sources.stats_path(DataSpec.from_config(data_cfg)))
  err = capfd.readouterr().err
  assert 'dataset statistics' in err and 'images/s' in err and 'ETA' in err and '6/6' in err


def test_demo_config_computes_its_own_mean():
  from configs import demo  # pylint: disable=g-import-not-at-top
  assert demo.get_config().data.statistics == 'train_split'
  assert default.get_config().data.statistics == 'train_split'


def test_unknown_statistics_value_is_a_one_line_error(tmp_path):
  config = default.get_config()
  config.data.statistics = 'mean'
  with pytest.raises(ValueError, match=r"config.data.statistics must be one of \('train_split'"):
    RunSpec.from_config(config)  # Where preflight.check_config was: the one parse of a config.


def test_empty_class_folder_is_named(tmp_path):
  folder = _write_classes(tmp_path / 'images', {'train': {'a': 3, 'b': 3}, 'val': {'a': 1}})
  os.makedirs(os.path.join(folder, 'train', 'empty_class'))
  with pytest.raises(sources.BadImageError) as e:
    sources.dataset_info(DataSpec.from_config(_small_cfg(tmp_path, folder)))
  assert 'empty_class' in str(e.value) and 'no image files' in str(e.value)
  assert '\n' not in str(e.value)

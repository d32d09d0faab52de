"""Fig. 3, Fig. 4 and the training curves from a tiny trained run."""

import os

import numpy as np
import pytest
from PIL import Image

import alexnet_jax
from alexnet_jax.analysis import figures
from alexnet_jax.data import sources
from alexnet_jax.data.spec import DataSpec


@pytest.fixture(scope='module')
def run(folder, tiny_config, tmp_path_factory, train_config):
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny_config(folder, num_epochs=1, eval_views=('center',))
  summary = train_config(config, workdir)
  return config, workdir, summary


def png_size(path):
  assert os.path.getsize(path) > 0
  with Image.open(path) as image:
    return image.size  # (width, height)


def brute_force_neighbours(queries, database, k):
  dist = ((queries[:, None, :] - database[None, :, :]) ** 2).sum(-1)
  return np.argsort(dist, axis=1, kind='stable')[:, :k], np.sort(dist, axis=1)[:, :k]


def test_kernel_grid_puts_column_0_above_column_1():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(2, 11, 11, 3, 48)).astype(np.float32)
  grid = figures.kernel_grid(kernel)
  # 48 kernels per column in rows of 16: 3 rows each, 12 px per tile with the gap.
  assert grid.shape == (6 * 12 - 1, 16 * 12 - 1, 3)
  for c in range(2):
    for i in (0, 17, 47):
      k = kernel[c, :, :, :, i]
      expected = (k - k.min()) / (k.max() - k.min())
      row, col = 3 * c + i // 16, i % 16
      tile = grid[row * 12:row * 12 + 11, col * 12:col * 12 + 11]
      np.testing.assert_allclose(tile, expected, atol=1e-6)


def test_colourfulness_higher_for_colour_kernel_than_grey():
  rng = np.random.default_rng(1)
  grey = np.repeat(rng.normal(size=(4, 11, 11, 1)), 3, axis=-1)
  colour = rng.normal(size=(4, 11, 11, 3))
  assert figures.colourfulness(grey) == pytest.approx(0.0, abs=1e-9)
  assert figures.colourfulness(colour) > 0.5
  # i.i.d. noise: E[population std of 3 normals] / sigma = E[chi_2] / sqrt(3) = sqrt(pi / 6).
  noise = rng.normal(size=(2000, 11, 11, 3))
  assert figures.colourfulness(noise) == pytest.approx(np.sqrt(np.pi / 6), abs=0.01)
  # Per column: column 1 grey, column 0 colour.
  kernel = np.stack([np.moveaxis(colour, 0, -1), np.moveaxis(grey, 0, -1)])
  scores = figures.column_colourfulness(kernel)
  assert scores[0] > scores[1]
  assert 'column 0 is the more colour-specific' in figures.describe_columns(scores)


def test_nearest_neighbours_match_brute_force():
  rng = np.random.default_rng(2)
  queries = rng.normal(size=(5, 16)).astype(np.float32)
  database = rng.normal(size=(37, 16)).astype(np.float32)
  chunks = [database[i:i + 10] for i in range(0, 37, 10)]  # Last chunk short (7).
  dist, index = figures.nearest_neighbours(queries, chunks, k=6)
  expected_index, expected_dist = brute_force_neighbours(queries, database, 6)
  np.testing.assert_array_equal(index, expected_index)
  np.testing.assert_allclose(dist, expected_dist, rtol=1e-4, atol=1e-4)


def test_kernels_png_shows_the_checkpoint_kernels(run):
  config, workdir, _ = run
  result = figures.make_figures(config, workdir, ('kernels',))
  kernel = np.asarray(alexnet_jax.load_params(workdir)['conv1']['kernel'])  # [2, 11, 11, 3, 4]
  # 4 kernels per column: one row each; 4 screen pixels per kernel pixel.
  assert png_size(result['paths']['kernels']) == (4 * (4 * 12 - 1), 4 * (2 * 12 - 1))
  with Image.open(result['paths']['kernels']) as image:
    pixels = np.asarray(image.convert('RGB'), np.float64)[::4, ::4] / 255
  for c in range(2):
    for i in range(4):
      k = kernel[c, :, :, :, i]
      expected = (k - k.min()) / (k.max() - k.min())
      np.testing.assert_allclose(pixels[c * 12:c * 12 + 11, i * 12:i * 12 + 11], expected,
                                 atol=1 / 255 + 1e-6)
  expected_scores = [figures.colourfulness(np.moveaxis(kernel[c], -1, 0)) for c in range(2)]
  assert result['colourfulness'] == pytest.approx(expected_scores)


def bar_length(pixels, rgb, tolerance=40):
  """Columns from the first to the last pixel within `tolerance` of an RGB colour (0: none)."""
  near = np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tolerance
  columns = np.flatnonzero(near.any(axis=0))
  return columns[-1] - columns[0] + 1 if len(columns) else 0


def tile_mean(pixels, centre_x, centre_y, half=20):
  return pixels[centre_y - half:centre_y + half, centre_x - half:centre_x + half].mean()


def test_predictions_neighbours_and_curves_pngs(run):
  config, workdir, summary = run
  result = figures.make_figures(config, workdir, ('predictions', 'neighbours', 'curves'),
                                num_images=2, num_train=None, batch_size=5)
  params = alexnet_jax.load_params(workdir)
  names = sources.dataset_info(DataSpec.from_config(config.data)).class_names
  # The dataset's two levels (conftest's write_dark_and_bright), plus noise and clipping.
  level = {names.index('dark'): 50, names.index('bright'): 200}
  data = DataSpec.from_config(config.data)
  val_images, val_labels, _ = next(figures.centre_crops(data, data.eval_split, 2, 2))

  # Fig. 4 left, 2 columns: the image with its mean added back, over two bars (two classes)
  # whose lengths are the softmax of the logits, counted here in NumPy: the true label's in
  # red, the other in blue, so red / (red + blue) is the true label's probability.
  assert png_size(result['paths']['predictions']) == (500, 500)
  logits = np.asarray(alexnet_jax.apply(params, val_images, config.model), np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  with Image.open(result['paths']['predictions']) as image:
    pixels = np.asarray(image.convert('RGB'))
  for i, label in enumerate(val_labels):
    half = pixels[:, i * 250:(i + 1) * 250]
    assert tile_mean(half, 125, 165) == pytest.approx(level[label], abs=15)
    bars = half[300:]
    red_len, blue_len = bar_length(bars, (214, 39, 40)), bar_length(bars, (31, 119, 180))
    assert red_len / (red_len + blue_len) == pytest.approx(probs[i, label], abs=0.02), i

  # Fig. 4 right: the neighbours are those of a brute-force search over fc7 of all 24
  # training images' centre crops (read in the same order), counted in NumPy, and each tile
  # shows its image: dark or bright as its label says.
  assert png_size(result['paths']['neighbours']) == (round(1.2 * 7 * 100), round(1.2 * 2 * 100))
  batches = list(figures.centre_crops(data, data.train_split, None, 24))
  train_images = np.concatenate([x for x, _, _ in batches])
  train_labels = np.concatenate([y for _, y, _ in batches])
  assert len(train_images) == 24
  fc7 = lambda x: np.asarray(alexnet_jax.apply(params, x, config.model, layer='fc7'), np.float64)
  expected, _ = brute_force_neighbours(fc7(val_images), fc7(train_images), 6)
  np.testing.assert_array_equal(result['neighbour_indices'], expected)
  with Image.open(result['paths']['neighbours']) as image:
    pixels = np.asarray(image.convert('RGB'))
  # subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01, wspace=hspace=0.05) on
  # 840x240 pixels: 7 columns of 823.2 / 7.3 px (gaps 5% of that), 2 rows of 235.2 / 2.05 px.
  width, height = 823.2 / 7.3, 235.2 / 2.05
  for r in range(2):
    for c in range(7):
      x = round(8.4 + c * 1.05 * width + width / 2)
      y = round(2.4 + r * 1.05 * height + height / 2)
      want = level[val_labels[r]] if c == 0 else level[train_labels[expected[r, c - 1]]]
      assert tile_mean(pixels, x, y) == pytest.approx(want, abs=15), (r, c)

  # Curves: the logged training loss and the final evaluation, at epoch 1.
  assert png_size(result['paths']['curves']) == (1600, 400)
  series = figures.curves(figures.read_metrics(workdir))
  np.testing.assert_allclose(series['loss'], [[1.0], [summary['last_loss']]], rtol=1e-6)
  np.testing.assert_allclose(series['val_center_top1_error'],
                             [[1.0], [summary['eval']['center']['top1_error']]], rtol=1e-6)


def test_curves_put_eval_lines_at_their_epoch():
  records = [{'step': 6, 'epoch': 1.0, 'loss': 2.0, 'top1_error': 0.5, 'top5_error': 0.1,
              'learning_rate': 0.01},
             {'step': 6, 'val_center_top1_error': 0.4, 'val_center_top5_error': 0.05},
             {'step': 12, 'epoch': 2.0, 'loss': 1.0, 'top1_error': 0.3, 'top5_error': 0.0,
              'learning_rate': 0.001},
             {'step': 12, 'val_center_top1_error': 0.2, 'val_center_top5_error': 0.0}]
  series = figures.curves(records)
  np.testing.assert_array_equal(series['val_center_top1_error'][0], [1.0, 2.0])
  np.testing.assert_array_equal(series['val_center_top1_error'][1], [0.4, 0.2])
  np.testing.assert_array_equal(series['loss'][1], [2.0, 1.0])

"""The paper's figures from a training run's workdir (Fig. 3, Fig. 4 and training curves).

  python -m alexnet_jax.analysis.figures --workdir=runs/demo [--which=kernels,predictions,neighbours,curves]

The run's config is read from <workdir>/config.json (or --config=configs/x.py); the data
dir can be overridden with --data_dir. Process 0 writes the PNGs to the workdir (or
--output_dir):
  kernels.png     Fig. 3: the 96 conv1 kernels, column 0's 48 above column 1's 48.
  predictions.png Fig. 4 left: validation images with their five most probable labels.
  neighbours.png  Fig. 4 right: validation images and their six nearest training images
                  in fc7 space.
  curves.png      loss, top-1/top-5 error (train and validation) and learning rate.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
# Figure objects drawn on their own Agg canvas, never pyplot: importing this module leaves
# matplotlib's backend alone (a notebook keeps its inline plots), and a display-less
# training machine needs no backend at all.
from matplotlib.backends.backend_agg import FigureCanvasAgg
import matplotlib.image
from matplotlib.figure import Figure
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image

from alexnet_jax import model, rundir, storage
from alexnet_jax.data import pipeline, sources
from alexnet_jax.rundir import checkpoints
from alexnet_jax.analysis import inspection
from alexnet_jax.data.spec import DataSpec

FIGURES = ('kernels', 'predictions', 'neighbours', 'curves')
DPI = 100  # With fixed figure sizes and no tight bbox, pixel sizes are known in advance.
KERNELS_PER_ROW = 16  # Fig. 3 lays 48 kernels per column out as 3 rows of 16.
KERNEL_SCALE = 4  # Each kernel pixel becomes 4x4 screen pixels.
# `colourfulness` of i.i.d. Gaussian kernels: E[std of 3 samples] / sigma = sqrt(pi / 6).
RANDOM_COLOURFULNESS = float(np.sqrt(np.pi / 6))


def load_config(workdir: str, data_dir: str | None = None) -> ml_collections.ConfigDict:
  """The run's config as train.py saved it, with the data dir optionally replaced."""
  config = ml_collections.ConfigDict(json.loads(rundir.RunDir(workdir).config.read_text()))
  if data_dir:
    config.data.data_dir = data_dir
  return config


def new_figure(**kwargs) -> Figure:
  """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend). A notebook
  shows it with `display(fig)` or as a cell's last value."""
  fig = Figure(dpi=DPI, **kwargs)
  FigureCanvasAgg(fig)
  return fig


def save(fig: Figure, path: str) -> None:
  """Writes the figure as a 256-colour PNG: a third of the bytes of RGB for photographs,
  so the figures stay small enough to commit."""
  fig.canvas.draw()
  rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
  png = io.BytesIO()
  Image.fromarray(rgb).quantize(256).save(png, format='png', optimize=True)
  storage.write_whole(path, png.getvalue())  # A local file or an object (gs://...).


# ----------------------------------------------------------------------- Fig. 3: kernels


def normalise_kernel(kernel: np.ndarray) -> np.ndarray:
  """Min-max to [0, 1] on one kernel alone, so weak kernels are as visible as strong ones."""
  lo, hi = kernel.min(), kernel.max()
  return (kernel - lo) / (hi - lo) if hi > lo else np.full_like(kernel, 0.5)


def tile_origin(column: int, index: int, kernels_per_column: int, size: int,
                per_row: int = KERNELS_PER_ROW, gap: int = 1) -> tuple[int, int]:
  """Top-left pixel of kernel `index` of `column` in `kernel_grid`'s array."""
  per_row = min(per_row, kernels_per_column)
  rows_per_column = -(-kernels_per_column // per_row)
  row = column * rows_per_column + index // per_row
  return row * (size + gap), (index % per_row) * (size + gap)


def kernel_grid(conv1_kernel: np.ndarray, per_row: int = KERNELS_PER_ROW, gap: int = 1) -> np.ndarray:
  """[columns, h, w, 3, k] conv1 kernels -> an RGB image, column 0's rows above column 1's.

  Gaps between tiles are white, as in the paper's figure.
  """
  columns, size, _, _, k = conv1_kernel.shape
  per_row = min(per_row, k)
  rows = columns * -(-k // per_row)
  grid = np.ones((rows * (size + gap) - gap, per_row * (size + gap) - gap, 3), np.float32)
  for c in range(columns):
    for i in range(k):
      top, left = tile_origin(c, i, k, size, per_row, gap)
      grid[top:top + size, left:left + size] = normalise_kernel(conv1_kernel[c, :, :, :, i])
  return grid


def colourfulness(kernels: np.ndarray) -> float:
  """Mean over [n, h, w, 3] kernels of (std across RGB per pixel, averaged) / (kernel std).

  0 for a grey kernel (R = G = B everywhere); near 1 when colour carries most of its
  variation. Sec. 6.1: one column's kernels are largely colour-agnostic, the other's
  colour-specific.
  """
  kernels = np.asarray(kernels, np.float64)
  across_rgb = kernels.std(axis=-1).mean(axis=(1, 2))
  overall = kernels.reshape(len(kernels), -1).std(axis=-1)
  return float(np.mean(across_rgb / np.maximum(overall, 1e-12)))


def column_colourfulness(conv1_kernel: np.ndarray) -> list[float]:
  """One colourfulness score per column of a [columns, h, w, 3, k] conv1 kernel."""
  return [colourfulness(np.moveaxis(conv1_kernel[c], -1, 0)) for c in range(conv1_kernel.shape[0])]


def describe_columns(scores: list[float]) -> str:
  """Whether the run shows the paper's split (one grey column, one colour column)."""
  text = ', '.join(f'column {c}: {s:.3f}' for c, s in enumerate(scores))
  if len(scores) < 2:
    return f'conv1 colourfulness {text} (one column: no split to show).'
  lo, hi = sorted(scores)
  # A factor of 1.5 is our threshold for "clearly different", not the paper's.
  verdict = (f'column {int(np.argmax(scores))} is the more colour-specific, as in the paper'
             if hi > 1.5 * lo else 'no clear colour-agnostic/colour-specific split in this run')
  # An untrained (i.i.d.) kernel is the reference: a learnt column well below it is
  # colour-agnostic.
  return (f'conv1 colourfulness {text}: {verdict} (grey kernels score 0, i.i.d. random '
          f'ones {RANDOM_COLOURFULNESS:.2f}).')


def plot_kernels(conv1_kernel: np.ndarray, path: str) -> None:
  """kernel_grid at KERNEL_SCALE screen pixels per kernel pixel, as a PNG of exactly that size."""
  grid = kernel_grid(conv1_kernel)
  big = np.repeat(np.repeat(grid, KERNEL_SCALE, axis=0), KERNEL_SCALE, axis=1)
  png = io.BytesIO()
  matplotlib.image.imsave(png, big, format='png')
  storage.write_whole(path, png.getvalue())  # A local file or an object (gs://...).


def kernels_figure(conv1_kernel: np.ndarray) -> Figure:
  """Fig. 3 for a notebook: each column's conv1 kernels with its colourfulness score."""
  columns, size, _, _, k = conv1_kernel.shape
  scores = column_colourfulness(conv1_kernel)
  fig = new_figure(figsize=(8, 1.9 * columns * -(-k // KERNELS_PER_ROW) / 3 + 0.4))
  axes = fig.subplots(columns, 1, squeeze=False)[:, 0]
  for c, ax in enumerate(axes):
    ax.imshow(kernel_grid(conv1_kernel[c:c + 1]), interpolation='nearest')
    ax.set_title(f'column {c}: {k} kernels {size}x{size}x3, colourfulness {scores[c]:.2f}',
                 fontsize=9)
    ax.axis('off')
  fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.01, hspace=0.25)
  return fig


# ----------------------------------------------------------------- Fig. 4: predictions


def displayable(images: np.ndarray, config) -> np.ndarray:
  """Undo mean subtraction and input scaling of centre crops, to uint8 RGB."""
  return inspection.deprocess(images, config)


def centre_crops(data: DataSpec, split: str, limit: int | None, batch_size: int):
  """(images [B, crop, crop, 3], labels, index of first) batches of a split's centre crops.

  The eval pipeline is deterministic, so reading it twice gives the same order.
  """
  # Float centre crops whatever config.data.augment_on says: the figures read them here.
  data = dataclasses.replace(data, eval_split=split, augment_on='host')
  seen = 0
  # Closed when this generator ends or is closed (or collected), not at the batches' end.
  with pipeline.eval_batches(data, global_batch_size=batch_size, views='center') as batches:
    for batch in batches:
      keep = batch['mask']
      if limit is not None:
        keep = keep & (np.arange(len(keep)) + seen < limit)
      if not keep.any():
        return
      yield batch['images'][keep, 0], batch['labels'][keep], seen
      seen += int(keep.sum())


def top5(params, images, config) -> tuple[np.ndarray, np.ndarray]:
  probs = jax.nn.softmax(model.apply(params, jnp.asarray(images), config.model))
  p, labels = jax.lax.top_k(probs, min(5, probs.shape[-1]))
  return np.asarray(p), np.asarray(labels)


def plot_predictions(images, labels, probs, top_labels, class_names, path, columns=4):
  save(predictions_figure(images, labels, probs, top_labels, class_names, columns), path)


def predictions_figure(images, labels, probs, top_labels, class_names, columns=4) -> Figure:
  """Fig. 4 left: each image over bars of its top-5 probabilities; correct label in red."""
  n = len(images)
  fig = new_figure(figsize=(2.5 * columns, 5))
  axes = fig.subplots(2, columns, squeeze=False, gridspec_kw={'height_ratios': [3, 2]})
  for i in range(columns):
    ax_img, ax_bar = axes[0, i], axes[1, i]
    ax_img.axis('off')
    ax_bar.axis('off')
    if i >= n:
      continue
    ax_img.imshow(images[i])
    ax_img.set_title(class_names[labels[i]], fontsize=9)
    names = [class_names[l] for l in top_labels[i]]
    colours = ['tab:red' if l == labels[i] else 'tab:blue' for l in top_labels[i]]
    y = np.arange(len(names))[::-1]
    ax_bar.barh(y, probs[i], color=colours)
    ax_bar.set_xlim(0, 1)
    for yy, name in zip(y, names):
      ax_bar.text(0.02, yy, name, va='center', fontsize=8)
  fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.02, wspace=0.1, hspace=0.1)
  return fig


# ------------------------------------------------------------ Fig. 4 right: neighbours


@functools.partial(jax.jit, static_argnames=('k',))
def nearest_in_chunk(queries, database, valid, best_dist, best_index, offset, *, k: int):
  """Merges this database chunk's k nearest (squared Euclidean) into the running best.

  ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2: one matrix product for the whole chunk.
  """
  queries = queries.astype(jnp.float32)
  database = database.astype(jnp.float32)
  dist = (jnp.sum(queries ** 2, -1)[:, None]
          - 2.0 * jnp.dot(queries, database.T, precision=jax.lax.Precision.HIGHEST)
          + jnp.sum(database ** 2, -1)[None, :])
  dist = jnp.where(valid[None, :], dist, jnp.inf)
  index = offset + jnp.broadcast_to(jnp.arange(database.shape[0]), dist.shape)
  dist = jnp.concatenate([best_dist, dist], axis=1)
  index = jnp.concatenate([best_index, index], axis=1)
  neg, at = jax.lax.top_k(-dist, k)
  return -neg, jnp.take_along_axis(index, at, axis=1)


def nearest_neighbours(queries, database_chunks, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
  """(squared distances, indices) [Q, k] of each query's k nearest rows over all chunks.

  database_chunks: iterable of [B, D] arrays (rows numbered in order); the database never
  has to fit in memory at once. A final short chunk is padded to the first chunk's size
  so the step compiles once.
  """
  queries = jnp.asarray(queries)
  best_dist = jnp.full((queries.shape[0], k), jnp.inf, jnp.float32)
  best_index = jnp.full((queries.shape[0], k), -1, jnp.int32)
  offset, size = 0, None
  for chunk in database_chunks:
    chunk = np.asarray(chunk)
    size = size or len(chunk)
    valid = np.arange(size) < len(chunk)
    padded = np.zeros((size,) + chunk.shape[1:], chunk.dtype)
    padded[:len(chunk)] = chunk
    best_dist, best_index = nearest_in_chunk(queries, padded, valid, best_dist, best_index,
                                             jnp.int32(offset), k=k)
    offset += len(chunk)
  return np.asarray(best_dist), np.asarray(best_index)


def fc7(params, images, config) -> jax.Array:
  return model.apply(params, jnp.asarray(images), config.model, layer='fc7')


def training_neighbours(params, images, config, *, k: int = 6, num_train: int | None = 2000,
                        batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
  """Fig. 4 right: (indices [Q, k], centre crops [Q, k, crop, crop, 3]) of the training
  images nearest to each of `images` in fc7 space, among the first `num_train` (None: all)."""
  queries = fc7(params, images, config)
  data = DataSpec.from_config(config.data)  # The run's config, read back: parsed here.
  split = data.train_split
  chunks = (fc7(params, x, config) for x, _, _ in
            centre_crops(data, split, num_train, batch_size))
  _, index = nearest_neighbours(queries, chunks, k=k)
  # Second pass over the same deterministic order: keep only the chosen images.
  wanted = set(index.ravel().tolist())
  found = {}
  for x, _, first in centre_crops(data, split, num_train, batch_size):
    for j in range(len(x)):
      if first + j in wanted:
        found[first + j] = x[j]
  return index, np.stack([[found[i] for i in row] for row in index])


def plot_neighbours(queries, neighbours, path):
  save(neighbours_figure(queries, neighbours), path)


def neighbours_figure(queries, neighbours) -> Figure:
  """Fig. 4 right: a query per row (first column), then its neighbours, nearest first."""
  rows, k = len(queries), neighbours.shape[1]
  fig = new_figure(figsize=(1.2 * (k + 1), 1.2 * rows))
  axes = fig.subplots(rows, k + 1, squeeze=False)
  for r in range(rows):
    for c in range(k + 1):
      ax = axes[r, c]
      ax.imshow(queries[r] if c == 0 else neighbours[r, c - 1])
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        for side in ax.spines.values():
          side.set_color('tab:red')
          side.set_linewidth(2)
  fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
  return fig


# ------------------------------------------------------------------ training curves


def read_metrics(workdir: str) -> list[dict]:
  with rundir.RunDir(workdir).metrics.open() as f:
    return [json.loads(line) for line in f if line.strip()]


def curves(records: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Series name -> (epochs, values). Eval lines carry only a step: their epoch is
  step / steps_per_epoch, read off the training lines."""
  train = [r for r in records if 'loss' in r and r.get('epoch')]
  steps_per_epoch = train[-1]['step'] / train[-1]['epoch'] if train else 1.0
  out = {}
  keys = ('loss', 'top1_error', 'top5_error', 'learning_rate', 'val_center_top1_error',
          'val_center_top5_error', 'val_ten_top1_error', 'val_ten_top5_error')
  for key in keys:
    pts = [(r.get('epoch', r['step'] / steps_per_epoch), r[key]) for r in records if key in r]
    if pts:
      out[key] = tuple(np.array(v, np.float64) for v in zip(*pts))
  return out


def plot_curves(records: list[dict], path: str) -> None:
  save(curves_figure(records), path)


def curves_figure(records: list[dict]) -> Figure:
  """Loss, top-1 and top-5 error (train and validation) and the learning rate by epoch."""
  series = curves(records)
  fig = new_figure(figsize=(16, 4))
  axes = fig.subplots(1, 4)
  panels = (('loss', ('loss',)),
            ('top-1 error', ('top1_error', 'val_center_top1_error', 'val_ten_top1_error')),
            ('top-5 error', ('top5_error', 'val_center_top5_error', 'val_ten_top5_error')),
            ('learning rate', ('learning_rate',)))
  labels = {'top1_error': 'train', 'top5_error': 'train', 'val_center_top1_error': 'val, centre',
            'val_center_top5_error': 'val, centre', 'val_ten_top1_error': 'val, 10 views',
            'val_ten_top5_error': 'val, 10 views'}
  for ax, (title, keys) in zip(axes, panels):
    for key in keys:
      if key in series:
        ax.plot(*series[key], marker='.', label=labels.get(key, key))
    ax.set_title(title)
    ax.set_xlabel('epoch')
    if title == 'learning rate':
      ax.set_yscale('log')
    if len(keys) > 1:
      ax.legend(fontsize=8)
  fig.subplots_adjust(left=0.05, right=0.98, top=0.9, bottom=0.14, wspace=0.3)
  return fig


# ------------------------------------------------------------------------------ driver


def make_figures(config, workdir: str, which=FIGURES, *, num_images: int = 4,
                 num_train: int | None = 2000, batch_size: int = 50,
                 output_dir: str | None = None) -> dict:
  """Writes the chosen figures to output_dir (default: the workdir).

  Returns {'paths': {figure: png}, 'colourfulness': per column, 'neighbour_indices': ...}.
  """
  unknown = set(which) - set(FIGURES)
  if unknown:
    raise ValueError(f'unknown figures {sorted(unknown)}; choose from {FIGURES}.')
  write = jax.process_index() == 0
  output_dir = storage.path(output_dir or workdir)
  if write:
    output_dir.mkdir(parents=True, exist_ok=True)
  result = {'paths': {}}
  needs_params = {'kernels', 'predictions', 'neighbours'} & set(which)
  params = checkpoints.load_params(workdir) if needs_params else None
  if 'kernels' in which:
    kernel = np.asarray(params['conv1']['kernel'])
    result['colourfulness'] = column_colourfulness(kernel)
    print(describe_columns(result['colourfulness']))
    result['paths']['kernels'] = str(output_dir / 'kernels.png')
    if write:
      plot_kernels(kernel, result['paths']['kernels'])
  if {'predictions', 'neighbours'} & set(which):
    data = DataSpec.from_config(config.data)  # The run's config, read back: parsed here.
    class_names = sources.dataset_info(data).class_names
    images, labels, _ = next(centre_crops(data, data.eval_split, num_images, num_images))
  if 'predictions' in which:
    probs, top_labels = top5(params, images, config)
    result['paths']['predictions'] = str(output_dir / 'predictions.png')
    if write:
      plot_predictions(displayable(images, config), labels, probs, top_labels, class_names,
                       result['paths']['predictions'], columns=num_images)
  if 'neighbours' in which:
    index, neighbours = training_neighbours(params, images, config, num_train=num_train,
                                            batch_size=batch_size)
    result['neighbour_indices'] = index
    result['paths']['neighbours'] = str(output_dir / 'neighbours.png')
    if write:
      plot_neighbours(displayable(images, config),
                      displayable(neighbours.reshape((-1,) + neighbours.shape[2:]), config)
                      .reshape(neighbours.shape[:2] + neighbours.shape[2:]),
                      result['paths']['neighbours'])
  if 'curves' in which:
    result['paths']['curves'] = str(output_dir / 'curves.png')
    if write:
      plot_curves(read_metrics(workdir), result['paths']['curves'])
  for path in result['paths'].values():
    print(f'wrote {path}' if write else f'(process {jax.process_index()}: not writing {path})')
  return result


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.workdir:
    sys.exit('error: --workdir is required.')
  config = FLAGS.config
  if config is None:
    config = load_config(FLAGS.workdir, FLAGS.data_dir)
  elif FLAGS.data_dir:
    config.data.data_dir = FLAGS.data_dir
  make_figures(config, FLAGS.workdir, FLAGS.which, num_images=FLAGS.num_images,
               num_train=FLAGS.num_train or None, output_dir=FLAGS.output_dir)


if __name__ == '__main__':
  # Defined here, not on import: the modules' flags would clash when imported together.
  flags.DEFINE_string('workdir', None, 'A training run: config.json, metrics.jsonl, checkpoints/.')
  flags.DEFINE_list('which', list(FIGURES), f'Figures to draw, from {FIGURES}.')
  flags.DEFINE_string('data_dir', None, "Overrides the run's config.data.data_dir.")
  flags.DEFINE_string('output_dir', None, 'Where the PNGs go; default: the workdir.')
  flags.DEFINE_integer('num_images', 4, 'Validation images in Fig. 4.')
  flags.DEFINE_integer('num_train', 2000, 'Training images searched for neighbours; 0 = all.')
  config_flags.DEFINE_config_file('config', None, "A config file; default: the run's config.json.")
  app.run(main)

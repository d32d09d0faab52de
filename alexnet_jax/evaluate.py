"""Top-1 / top-5 error on a whole validation split: single view and the paper's 10 views.

Sec. 4.1: "At test time, the network makes a prediction by extracting five 224x224
patches (the four corner patches and the center patch) as well as their horizontal
reflections (hence ten patches in all), and averaging the predictions made by the
network's softmax layer on the ten patches." Every example is counted exactly once:
the input pipeline pads the last batch and marks the padding in `mask`.

`evaluate` runs one view scheme; `evaluate_views` runs several and logs them (training
calls it each epoch and at the end); `evaluate_checkpoint` is `--mode=eval`.
"""

from __future__ import annotations

import collections
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from alexnet_jax import config as config_lib
from alexnet_jax import metrics, model, parallel, rundir, storage
from alexnet_jax.data import augment, checks, device_augment, pipeline, sources
from alexnet_jax.data.statistics import load_stats
from alexnet_jax.model import losses
from alexnet_jax.rundir import checkpoints


def error_counts(probs: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """[top-1 errors, top-5 errors, examples] among the unmasked rows.

  probs: [N, classes] probabilities, or any score that orders the classes the same way
  (logits). Counted by `losses.top_k_errors`' rule: ties count against the model, and so
  does a row with any NaN or Inf.
  """
  wrong = losses.top_k_errors(probs, labels, (1, 5))
  m = mask.astype(jnp.float32)
  return jnp.stack([jnp.sum(m * wrong[:, 0]), jnp.sum(m * wrong[:, 1]), jnp.sum(m)])


@functools.lru_cache(maxsize=8)
def eval_step(layout: parallel.Layout, device_views: tuple | None = None):
  """The jitted eval step: (params, images, labels, mask, *means) -> [top-1 errors, top-5
  errors, examples] over the unmasked rows; what --mode=eval and alexnet_jax.aot compile.

  images: [N, views, H, W, 3] float views, or with device_views = (views, crop,
  input_scale) the uint8 stored images [N, S, S, 3] the step cuts the views from
  (augment_on='device'); it then also takes the two mean images.
  """
  probs_fn = layout.view_probs()

  def step(params, images, labels, mask, *means):
    if device_views is not None:
      views, crop, input_scale = device_views
      cut = functools.partial(device_augment.eval_views, views=views, crop=crop,
                              input_scale=input_scale)
      images = layout.per_example(cut, replicated_args=len(means))(images, *means)
    return error_counts(probs_fn(params, images), labels, mask)

  return layout.jit(step)


def evaluate(params, run: config_lib.RunSpec, layout: parallel.Layout, views: str, *,
             show_progress: bool = True) -> dict:
  """Errors over the whole eval split with `views` in ('center', 'ten'); params laid out
  by `layout` (whose model is run.model)."""
  batch_size = run.eval_batch_size
  layout.check_batch(batch_size)
  info = sources.dataset_info(run.data)
  spec = run.data.for_backend(jax.default_backend())
  means = ()
  if spec.augment_on_device:
    means = augment.mean_images(load_stats(spec).mean_image, spec.mean_patch, spec.crop_size)
    step = eval_step(layout, (views, spec.crop_size, spec.input_scale))
  else:
    step = eval_step(layout)
  totals = np.zeros(3)
  progress = metrics.Progress(info.num_eval, f'eval ({views})',
                              enabled=show_progress and jax.process_index() == 0)
  # Two batches in flight: the pipeline and the device overlap, and the progress bar
  # counts finished batches (dispatch alone would run far ahead of the device).
  pending = collections.deque()

  def finish_oldest():
    counts, examples = pending.popleft()
    totals[:] += np.asarray(jax.device_get(counts))
    progress.update(examples)

  with pipeline.eval_batches(
      spec, global_batch_size=batch_size, views=views,
      process_index=jax.process_index(), process_count=jax.process_count()) as batches:
    for batch in batches:
      examples = int(batch['mask'].sum()) * jax.process_count()  # Shares are equal but the last.
      batch = layout.global_batch(batch)
      pending.append((step(params, batch['images'], batch['labels'], batch['mask'], *means),
                      examples))
      if len(pending) > 2:
        finish_oldest()
  while pending:
    finish_oldest()
  progress.close()
  top1, top5, n = totals
  if int(n) != info.num_eval:
    raise RuntimeError(f'Evaluation counted {int(n)} examples, the split has {info.num_eval}.')
  return {'top1_error': top1 / n, 'top5_error': top5 / n, 'examples': int(n)}


def evaluate_views(params, run: config_lib.RunSpec, layout: parallel.Layout, views, step: int,
                   workdir: str,
                   writer: metrics.Writer, *, final: bool = True) -> dict:
  """Runs each view scheme and logs the errors; `final` results also go to DIR/eval.json."""
  results = {'step': step}
  for v in views:
    results[v] = evaluate(params, run, layout, v)
    logging.info('eval %-6s step %d: top-1 error %.4f, top-5 error %.4f (%d images)', v, step,
                 results[v]['top1_error'], results[v]['top5_error'], results[v]['examples'])
    writer.write(step, {f'val_{v}_top1_error': results[v]['top1_error'],
                        f'val_{v}_top5_error': results[v]['top5_error']})
  if final and jax.process_index() == 0:
    results['devices'] = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
    path = rundir.RunDir(workdir).eval
    with storage.writing(path):
      storage.write_whole(path, json.dumps(results, indent=2))
  return results


def evaluate_checkpoint(run: config_lib.RunSpec, workdir: str) -> dict:
  """`--mode=eval`: the latest checkpoint of `workdir` on the eval split, every view scheme."""
  spec = run.model
  layout = parallel.Layout.for_run(run, batch_sizes=(run.eval_batch_size,))
  checks.check_dataset(run.data, spec)  # No batch size: evaluation reads no training batch.
  ckpt_dir = rundir.RunDir(workdir).checkpoints
  step = None
  if ckpt_dir.is_dir():
    with checkpoints.Checkpoints(workdir) as ckpt:
      step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {ckpt_dir}: train first (without --mode=eval) '
                            'or point --workdir at a trained run.')
  checks.ensure_statistics(run.data)
  params = checkpoints.load_params(workdir)
  model.validate_params(params, spec)
  # NaN scores would make every example an error: say why instead.
  bad = [f'{name}/{leaf}' for name, layer in params.items() for leaf, x in layer.items()
         if not np.all(np.isfinite(x))]
  if bad:
    raise ValueError(f'checkpoint {ckpt_dir / str(step)} holds NaN/Inf params '
                     f'({", ".join(bad)}): move that step directory aside to evaluate the one before '
                     'it, or train again with a lower --config.optim.learning_rate.')
  with jax.set_mesh(layout.mesh):
    params = layout.shard_params(params)
    writer = metrics.Writer(workdir, enabled=jax.process_index() == 0)
    return evaluate_views(params, run, layout, run.eval_views, step, workdir, writer)

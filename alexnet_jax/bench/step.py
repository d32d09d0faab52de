"""Train-step benchmark: the jitted step exactly as training runs it, timed on synthetic data.

`run` builds the default config's parameters and optimizer, shards them over the
`parallel.Layout` it is given, compiles `jax.jit(step, donate_argnums=(0,))` (timed on
its own: lower + compile) and times `steps` steps after two warm-up steps, each ended
with block_until_ready. Alongside, it counts the FLOPs of one step from the layer shapes of
the two-column network (and asks XLA for its own count), and times a large float32
matmul in the same process as a yardstick for what this machine's cores can do. The step
compiles with `alexnet_jax.parallel.compiler`'s options, as in training; XLA_FLAGS that name the
same option (--xla_cpu_experimental_ynn_fusion_type=...) override them, to compare.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import model, optim, parallel
from alexnet_jax.parallel import compiler

WARMUP_STEPS = 2


def forward_macs_per_image(spec: model.Spec) -> dict[str, int]:
  """Multiply-adds of each conv/fc layer for one image, summed over the columns.

  Counted from this layout's kernels: conv1, conv2, conv4 and conv5 read only their own
  column's maps, conv3 and the fc layers read both columns (param_shapes).
  """
  shapes = model.param_shapes(spec)
  pad1 = model.conv1_padding(spec.image_size)
  size1 = (spec.image_size + sum(pad1) - 11) // 4 + 1

  def pooled(size):
    return (size - spec.pool_window) // spec.pool_stride + 1

  size2 = pooled(size1)  # conv2 keeps its input size (padding 2).
  size3 = pooled(size2)  # conv3-conv5 keep theirs (padding 1).
  out_size = {'conv1': size1, 'conv2': size2, 'conv3': size3, 'conv4': size3, 'conv5': size3}
  macs = {}
  for name in (n for n in spec.layers if n in model.CONV_LAYERS):
    columns, kh, kw, cin, cout = shapes[name]['kernel']
    macs[name] = columns * out_size[name] ** 2 * kh * kw * cin * cout
  for name in model.FC_LAYERS:
    macs[name] = int(np.prod(shapes[name]['kernel']))
  return macs


def train_step_flops(spec: model.Spec, batch_size: int) -> float:
  """2 FLOPs per multiply-add, times 3 for forward + backward (both gradients)."""
  return 2.0 * 3.0 * sum(forward_macs_per_image(spec).values()) * batch_size


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def matmul_flops_per_s(n: int = 4096, repeats: int = 7) -> dict:
  """Median FLOP/s of a jitted float32 [n, n] @ [n, n] (after one warm-up call)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.dot)
  jax.block_until_ready(matmul(a, b))
  median, times = _median_time(lambda: matmul(a, b), repeats)
  flops = 2.0 * n ** 3
  return {'matmul_n': n, 'matmul_median_s': median, 'matmul_flops_per_s': flops / median,
          'matmul_min_s': min(times), 'matmul_max_s': max(times)}


def make_train_step(run, layout: parallel.Layout, batch_size: int, *,
                    xla_defaults: bool = False):
  """({'ours': jitted step}, initial state), exactly as `alexnet_jax.train` builds them.

  xla_defaults: the dict also holds 'xla_defaults', the same step (same optimizer) under
  a plain jax.jit, i.e. compiled with XLA's default options.
  """
  from alexnet_jax import train  # Imports the input pipeline (TensorFlow) too.
  layout.check_batch(batch_size)
  tx = optim.make_optimizer(run.optim, steps_per_epoch=1000).tx
  steps = {'ours': train.make_train_step(layout, tx, batch_size)}
  if xla_defaults:
    steps['xla_defaults'] = jax.jit(train.train_step_function(layout, tx, batch_size),
                                    donate_argnums=(0,))
  return steps, train.init_state(run.seed, layout, tx)


def synthetic_batch(run, layout: parallel.Layout, batch_size: int):
  """Random mean-subtracted-looking images and labels, already on the devices."""
  size = run.model.image_size
  images = 60.0 * jax.random.normal(jax.random.key(1), (batch_size, size, size, 3), jnp.float32)
  labels = jax.random.randint(jax.random.key(2), (batch_size,), 0, run.model.num_classes)
  sharding = layout.batch_sharding
  return jax.device_put(images, sharding), jax.device_put(labels, sharding)


def _xla_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # Not every backend implements it.
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def run(run_spec, layout: parallel.Layout, *, batch_size: int, steps: int,
        matmul_n: int = 4096, xla_defaults: bool = False) -> dict:
  """Times the train step of `run_spec` (a parsed config; its model.dtype included) on `layout`; a JSON-able
  dict. xla_defaults: also time the same step compiled with XLA's default options (plain
  jax.jit), alternating step by step with ours, under result['xla_defaults']."""
  with jax.set_mesh(layout.mesh):  # As train.train_and_evaluate runs it.
    return _run(run_spec, layout, batch_size=batch_size, steps=steps, matmul_n=matmul_n,
                xla_defaults=xla_defaults)


def _run(run_spec, layout, *, batch_size, steps, matmul_n, xla_defaults):
  spec = layout.spec
  step_fns, state = make_train_step(run_spec, layout, batch_size, xla_defaults=xla_defaults)
  images, labels = synthetic_batch(run_spec, layout, batch_size)

  steps_to_time, lower_s, compile_s = {}, {}, {}
  for name, fn in step_fns.items():
    start = time.perf_counter()
    lowered = fn.lower(state, images, labels)
    lower_s[name] = time.perf_counter() - start
    start = time.perf_counter()
    steps_to_time[name] = lowered.compile()
    compile_s[name] = time.perf_counter() - start
  compiled = steps_to_time['ours']

  for _ in range(WARMUP_STEPS):
    for fn in steps_to_time.values():
      state, metrics = fn(state, images, labels)
      jax.block_until_ready(state)
  all_times = {name: [] for name in steps_to_time}
  for _ in range(steps):  # Alternating, so that both see the same machine load.
    for name, fn in steps_to_time.items():
      start = time.perf_counter()
      state, metrics = fn(state, images, labels)
      jax.block_until_ready(state)
      all_times[name].append(time.perf_counter() - start)
  times = all_times['ours']
  loss = float(metrics['loss'])

  median = statistics.median(times)
  macs = forward_macs_per_image(spec)
  flops = train_step_flops(spec, batch_size)
  xla_flops = _xla_flops(compiled)
  result = {
      'jax_version': jax.__version__,
      'device_kind': jax.devices()[0].device_kind,
      'platform': jax.devices()[0].platform,
      # What the step compiled with (alexnet_jax.parallel.compiler); None: XLA's defaults.
      'compiler_options': compiler.options(jax.devices()[0].platform),
      'num_devices': len(jax.devices()),
      'batch_size': batch_size,
      'mesh': {'data': layout.data_size, 'model': layout.model_size},
      'dtype': spec.dtype,
      'steps': steps,
      'warmup_steps': WARMUP_STEPS,
      'lower_s': lower_s['ours'],
      'compile_s': compile_s['ours'],
      'lower_compile_s': lower_s['ours'] + compile_s['ours'],
      'step_median_s': median,
      'step_min_s': min(times),
      'step_max_s': max(times),
      'step_times_s': times,
      'images_per_s': batch_size / median,
      'forward_macs_per_image': macs,
      'forward_gflops_per_image': 2.0 * sum(macs.values()) / 1e9,
      'step_flops_analytic': flops,
      'step_flops_xla': xla_flops,
      'achieved_flops_per_s': flops / median,
      'final_loss': loss,
  }
  if xla_defaults:
    plain_median = statistics.median(all_times['xla_defaults'])
    result['xla_defaults'] = {'compile_s': compile_s['xla_defaults'], 'step_median_s': plain_median,
                              'step_times_s': all_times['xla_defaults'],
                              'images_per_s': batch_size / plain_median}
  result.update(matmul_flops_per_s(matmul_n))
  result['achieved_over_matmul'] = result['achieved_flops_per_s'] / result['matmul_flops_per_s']
  return result


def run_pipeline(run_spec, layout: parallel.Layout, *, batch_size: int, steps: int,
                 augment_on: str = 'host', jpeg_size: tuple[int, int] = (256, 256),
                 num_images: int = 256) -> dict:
  """The train step fed by the real training pipeline, beside the same step on synthetic
  input, alternating step by step in one run (the machine's load hits both alike).

  Generated JPEGs (bench.input.write_jpegs, stored size: a prepared copy) in a 'folder'
  source go through the training pipeline and `data.pipeline.device_batches` as in
  training, with `augment_on` 'host' (float32 224 crops made by tf.data) or 'device'
  (uint8 stored images plus (epoch, index); the step makes the crops). The synthetic input
  has the same form, already on the devices. Each fed step's time includes waiting for its
  batch; compile time is not timed. `fed_over_synthetic` < 1 is what the pipeline costs.
  """
  with jax.set_mesh(layout.mesh):
    return _run_pipeline(run_spec, layout, batch_size=batch_size, steps=steps,
                         augment_on=augment_on, jpeg_size=jpeg_size, num_images=num_images)


def _run_pipeline(run_spec, layout, *, batch_size, steps, augment_on, jpeg_size, num_images):
  import dataclasses
  import os
  import tempfile

  from alexnet_jax import train  # Imports the input pipeline (TensorFlow) too.
  from alexnet_jax.bench import input as input_bench
  from alexnet_jax.data import pipeline

  layout.check_batch(batch_size)
  with tempfile.TemporaryDirectory() as tmp:
    input_bench.write_jpegs(os.path.join(tmp, 'images'), jpeg_size=jpeg_size,
                            num_images=num_images)
    # Statistics: constants, not a pass over the generated images: the pass is not what is
    # timed, and any mean image costs the same per batch.
    spec = dataclasses.replace(run_spec.data, source='folder', folder=os.path.join(tmp, 'images'),
                               data_dir=os.path.join(tmp, 'data_dir'), augment_on=augment_on,
                               statistics='imagenet')
    tx = optim.make_optimizer(run_spec.optim, steps_per_epoch=1000).tx
    step_fn = train.make_train_step(layout, tx, batch_size,
                                    train.device_augment(spec, run_spec.seed))
    state = train.init_state(run_spec.seed, layout, tx)
    synthetic = _synthetic_feed(run_spec, layout, batch_size, spec)
    batches = pipeline.device_batches(
        pipeline.train_batches(spec, global_batch_size=batch_size, seed=0),
        layout, depth=spec.prefetch_batches)

    def fed():
      batch = next(batches)
      return [batch[k] for k in ('images', 'labels', 'epoch', 'index') if k in batch]

    times = {'synthetic': [], 'fed': []}
    with batches:  # Closed (its prefetching threads stopped) before its files are deleted.
      for i in range(WARMUP_STEPS + steps):  # The first steps compile; then alternate.
        for kind in ('synthetic', 'fed'):
          start = time.perf_counter()
          inputs = synthetic if kind == 'synthetic' else fed()
          state, metrics = step_fn(state, *inputs)
          jax.block_until_ready(state)
          if i >= WARMUP_STEPS:
            times[kind].append(time.perf_counter() - start)
  medians = {kind: statistics.median(t) for kind, t in times.items()}
  return {'source': f'folder of {num_images} generated {jpeg_size[0]}x{jpeg_size[1]} JPEGs',
          'augment_on': augment_on, 'batch_size': batch_size, 'dtype': run_spec.model.dtype,
          'steps': steps, 'step_median_s': medians['fed'],
          'synthetic_step_median_s': medians['synthetic'],
          'images_per_s': batch_size / medians['fed'],
          'synthetic_images_per_s': batch_size / medians['synthetic'],
          'fed_over_synthetic': medians['synthetic'] / medians['fed'],
          'step_times_s': times['fed'], 'synthetic_step_times_s': times['synthetic'],
          'final_loss': float(metrics['loss'])}


def _synthetic_feed(run_spec, layout, batch_size: int, spec) -> list:
  """Step inputs of the form the pipeline gives for `spec`, already on the devices."""
  if not spec.augment_on_device:
    return list(synthetic_batch(run_spec, layout, batch_size))
  size, sharding = spec.stored_size, layout.batch_sharding
  images = jax.random.randint(jax.random.key(1), (batch_size, size, size, 3), 0, 256, jnp.int32)
  labels = jax.random.randint(jax.random.key(2), (batch_size,), 0, run.model.num_classes)
  index = jnp.arange(batch_size, dtype=jnp.int32)
  return [jax.device_put(x, sharding) for x in
          (images.astype(jnp.uint8), labels, jnp.zeros_like(index), index)]

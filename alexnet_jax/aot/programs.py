"""The run's train and eval steps compiled for GPUs and TPUs that are not here.

`python -m alexnet_jax.aot --config=configs/paper.py --target=h100 --topology=1x1x2`
(aot/__main__.py) builds the run's own `parallel.Layout` on compile-only devices of the target
(`alexnet_jax.aot.targets`) and compiles the steps `train.py` and `evaluate.py` run, with the
same optimizer, shardings, mesh and dtype, for that target's XLA. From the compiled
programs it reports, per device: compile time, memory against the device's, the largest
batch that fits (found by compiling), FLOPs per step (XLA's cost analysis, where the
backend gives one, beside the network's count), every collective by kind, mesh axis and
size, whether the columns talk only where the paper says (Sec. 3.2), and a roofline
projection of images/s. Everything here is compiled, not run.

The compile-only backends (the CUDA PJRT plugin, ptxas and libtpu, pinned to the jax
version: `targets.COMPILERS`) live in a folder of their own, out of the run-time
environment: `python -m alexnet_jax.aot --install_compilers` installs them there once, and
`python -m alexnet_jax.aot` re-executes itself with the folder on its path
(`targets.use_compilers`).
"""


from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp

from alexnet_jax import config as config_lib
from alexnet_jax import evaluate, model, optim, parallel, train
from alexnet_jax.aot import hlo, targets
from alexnet_jax.data import augment as data_augment
from alexnet_jax.data import spec as data_spec
from alexnet_jax.data import statistics

# ILSVRC-2012's training set (Sec. 2): it sets the learning-rate schedule's step
# boundaries, constants in the compiled step.
IMAGENET_TRAIN_IMAGES = 1_281_167
# JAX preallocates this fraction of a GPU's memory for XLA (XLA_PYTHON_CLIENT_MEM_FRACTION);
# a program fits when it fits there. A TPU program may use all of its HBM.
GPU_MEMORY_FRACTION = float(os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.75'))
# The batch search's granularity, per device.
BATCH_STEP = 8


def network_flops(spec: model.Spec) -> float:
  """The network's forward FLOPs for one image: XLA's cost analysis of the unsharded,
  unoptimized forward pass on this machine's default backend, independent of the target."""
  shapes = model.param_shapes(spec)
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))
  image = jax.ShapeDtypeStruct((1, spec.image_size, spec.image_size, 3), jnp.float32)
  cost = jax.jit(lambda p, x: model.forward(p, x, spec)).lower(params, image).cost_analysis()
  return float(cost['flops'])


def _steps_per_epoch(run: config_lib.RunSpec) -> int:
  return max(IMAGENET_TRAIN_IMAGES // run.batch_size, 1)


def _abstract(shape, dtype, sharding):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


@dataclasses.dataclass
class Compiled:
  """A compiled step and what its analyses say, per device."""
  seconds: float
  memory: dict  # arguments, outputs, aliased, temp, total (bytes).
  flops: float | None  # From the backend's cost analysis; None where it gives none.
  bytes: float  # From the cost analysis, else `hbm_bytes`.
  collectives: list[hlo.Collective]
  hlo: str


def _compile(fn, args, layout) -> Compiled:
  start = time.perf_counter()
  with jax.set_mesh(layout.mesh):
    compiled = fn.lower(*args).compile()
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  memory = {'arguments': stats.argument_size_in_bytes, 'outputs': stats.output_size_in_bytes,
            'aliased': stats.alias_size_in_bytes, 'temp': stats.temp_size_in_bytes}
  memory['total'] = memory['arguments'] + memory['outputs'] - memory['aliased'] + memory['temp']
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  text = compiled.as_text()
  return Compiled(seconds, memory, float(cost['flops']) if cost and 'flops' in cost else None,
                  float(cost['bytes accessed']) if cost and 'bytes accessed' in cost else hlo.hbm_bytes(text),
                  hlo.collectives(text, (layout.data_size, layout.model_size)), text)


def _data(run: config_lib.RunSpec, layout: parallel.Layout) -> data_spec.DataSpec:
  """config.data as training reads it on the target's platform (augment_on 'auto' is
  'device' on a GPU or TPU)."""
  return run.data.for_backend(layout.mesh.devices.flat[0].platform)


def compile_train_step(run: config_lib.RunSpec, layout: parallel.Layout, batch_size: int) -> Compiled:
  """train.py's step for a global batch of `batch_size` on `layout`'s devices, fed as
  training feeds it: uint8 stored images with each example's (epoch, index) where Sec.
  4.1's augmentation runs in the step, else float32 crops."""
  tx = optim.make_optimizer(run.optim, _steps_per_epoch(run)).tx
  # The state's structure is built outside jax.set_mesh: optax builds it eagerly, and
  # nothing runs eagerly on compile-only devices.
  state = train.abstract_state(run.seed, layout, tx)
  spec = _data(run, layout)
  # The statistics' values are constants of the step: ImageNet's stand in for the run's.
  augment = train.device_augment(spec, run.seed, statistics.imagenet_stats(spec.stored_size))
  batch = lambda shape, dtype: _abstract((batch_size,) + shape, dtype, layout.batch_sharding)
  labels = batch((), jnp.int32)
  if augment is not None:
    args = (state, batch((spec.stored_size, spec.stored_size, 3), jnp.uint8), labels,
            batch((), jnp.int32), batch((), jnp.int32))
  else:
    size = layout.spec.image_size
    args = (state, batch((size, size, 3), jnp.float32), labels)
  return _compile(train.make_train_step(layout, tx, batch_size, augment), args, layout)


def compile_eval_step(run: config_lib.RunSpec, layout: parallel.Layout) -> Compiled:
  """evaluate.py's step for config.eval_batch_size examples of the config's most views,
  fed as evaluation feeds it (stored images where the views are cut in the step)."""
  views = 'ten' if 'ten' in run.eval_views else 'center'
  count = 10 if views == 'ten' else 1  # Sec. 4.1: five patches and their reflections.
  spec = _data(run, layout)
  n, crop = run.eval_batch_size, layout.spec.image_size
  params = jax.tree.map(lambda s, sharding: _abstract(s, jnp.float32, sharding),
                        model.param_shapes(layout.spec), layout.param_shardings,
                        is_leaf=lambda x: isinstance(x, tuple))
  labels = _abstract((n,), jnp.int32, layout.batch_sharding)
  mask = _abstract((n,), jnp.bool_, layout.batch_sharding)
  if spec.augment_on_device:
    size = spec.stored_size
    images = _abstract((n, size, size, 3), jnp.uint8, layout.batch_sharding)
    means = [_abstract(m.shape, jnp.float32, layout.replicated) for m in data_augment.mean_images(
        statistics.imagenet_stats(size).mean_image, spec.mean_patch, spec.crop_size)]
    step = evaluate.eval_step(layout, (views, spec.crop_size, spec.input_scale))
  else:
    images = _abstract((n, count, crop, crop, 3), jnp.float32, layout.batch_sharding)
    means, step = [], evaluate.eval_step(layout)
  return _compile(step, (params, images, labels, mask, *means), layout)


def _fits(compiled: Compiled | None, usable: int) -> bool:
  return compiled is not None and compiled.memory['total'] <= usable


def _compile_or_none(run, layout, batch_size):
  """The train step, or None where the target's compiler itself says it does not fit."""
  try:
    return compile_train_step(run, layout, batch_size)
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' in str(e) or 'out of memory' in str(e).lower():
      return None
    raise


def largest_batch(run: config_lib.RunSpec, layout: parallel.Layout, usable: int, first: Compiled,
                  per_device: int, max_compiles: int = 8) -> tuple[int, list[int]]:
  """The largest per-device batch (a multiple of BATCH_STEP) whose train step fits in
  `usable` bytes, found by compiling; and the per-device batches compiled on the way.

  Memory is close to linear in the batch, so each compile after the first two aims where a
  line crosses `usable`: the line through the two largest batches until one does not fit,
  then through the largest that fits and the smallest that does not (regula falsi); where
  two compiles in a row move the same end of that bracket, it is halved instead. The search
  ends when a fitting batch and one BATCH_STEP more that does not are found, or after
  `max_compiles`. XLA picks other algorithms at other sizes, so memory is not quite
  monotonic in the batch: the answer is the largest fitting batch found.
  """
  totals = {per_device: first.memory['total']}  # Per-device batch -> bytes (inf: no fit).

  def compile_at(b):
    compiled = _compile_or_none(run, layout, b * layout.data_size)
    totals[b] = compiled.memory['total'] if compiled is not None else math.inf

  compile_at(2 * per_device)
  stuck, last_side = 0, None  # Compiles in a row that moved the same end of the bracket.
  while len(totals) < max_compiles + 1:
    fit = [b for b, m in totals.items() if m <= usable]
    over = [b for b, m in totals.items() if m > usable]
    lo, hi = max(fit, default=0), min(over, default=None)
    if hi is not None and hi - lo <= BATCH_STEP:
      break
    if hi is None or not math.isfinite(totals[hi]) or lo == 0:
      (b1, m1), (b2, m2) = sorted((b, m) for b, m in totals.items() if math.isfinite(m))[-2:]
    else:  # Regula falsi: the line through the bracket's ends.
      (b1, m1), (b2, m2) = (lo, totals[lo]), (hi, totals[hi])
    slope = (m2 - m1) / (b2 - b1) if b2 != b1 and m2 != m1 else None
    guess = b2 + (usable - m2) / slope if slope else 2 * max(totals)
    if hi is not None and (stuck >= 2 or not math.isfinite(totals[hi])):
      guess = (lo + hi) / 2  # The line keeps moving one end only: halve the bracket instead.
    b = int(guess) // BATCH_STEP * BATCH_STEP
    upper = hi - BATCH_STEP if hi is not None else math.inf
    b = int(min(max(b, lo + BATCH_STEP), upper))
    if b in totals:
      break
    compile_at(b)
    side = totals[b] <= usable
    stuck, last_side = (stuck + 1 if side == last_side else 1), side
  fit = [b for b, m in totals.items() if m <= usable]
  return max(fit, default=0), list(totals)


def compile_run(run: config_lib.RunSpec, target: str, topology: str, *, max_batch: bool = True,
                eval_step: bool = True) -> dict:
  """Compiles `run` (a parsed config) for `target` on `topology`; returns the report as a dict."""
  devices, device = targets.devices(target, topology)
  layout = parallel.Layout.for_run(run, devices=devices)
  dtype = run.model.dtype
  usable = int(device.memory_bytes * (GPU_MEMORY_FRACTION if target in targets.GPUS else 1.0))
  batch = run.batch_size
  per_device = batch // layout.data_size
  step = compile_train_step(run, layout, batch)
  row = {
      'target': target, 'topology': topology, 'device': device.kind, 'devices': len(devices),
      'mesh': f'{layout.data_size}x{layout.model_size}', 'dtype': dtype, 'batch': batch,
      'batch_per_device': per_device, 'compile_s': {'train': round(step.seconds, 1)},
      'memory': step.memory, 'memory_usable': usable, 'memory_device': device.memory_bytes,
      'fits': step.memory['total'] <= usable,
  }
  if eval_step:
    ev = compile_eval_step(run, layout)
    row['compile_s']['eval'] = round(ev.seconds, 1)
    row['eval_memory'] = ev.memory
    row['eval_fits'] = ev.memory['total'] <= usable
    row['eval_collectives'] = [dataclasses.asdict(c) for c in ev.collectives]
  if max_batch or not row['fits']:
    row['largest_batch_per_device'], row['batches_compiled'] = largest_batch(
        run, layout, usable, step, per_device)
  analytic = 3 * network_flops(layout.spec) * batch / len(devices)  # Forward + backward (2x).
  row['flops'] = {'cost_analysis': step.flops, 'network': analytic}
  row['bytes'] = step.bytes
  row['collectives'] = [dataclasses.asdict(c) for c in step.collectives]
  row['exchange_problems'] = hlo.exchange_problems(step.collectives, layout.model_size)
  flops = step.flops if step.flops is not None else analytic
  peak = device.peak_flops[dtype]
  compute_s, memory_s = flops / peak, step.bytes / device.memory_bandwidth
  # The step's time on each device; the mesh processes `batch` images in it.
  row['projection'] = {
      'images_per_s_per_device': batch / max(compute_s, memory_s) / len(devices),
      'bound': 'compute' if compute_s >= memory_s else 'memory',
      'compute_ms': 1e3 * compute_s, 'memory_ms': 1e3 * memory_s,
      'peak_flops': peak, 'memory_bandwidth': device.memory_bandwidth, 'source': device.source}
  row['convolution_dtypes'] = hlo.convolution_dtypes(step.hlo)
  return row


def _gb(n: float) -> str:
  return f'{n / 1e9:,.2f} GB'


def _summarize_collectives(found: list[dict]) -> str:
  groups = {}
  for c in found:
    key = ('backward' if c['backward'] else 'forward', '+'.join(c['axes']) or 'none', c['kind'])
    groups.setdefault(key, []).append(c)
  parts = []
  for (direction, axes, kind), cs in sorted(groups.items()):
    scopes = ', '.join(f"{c['scope'].replace('exchange_before_', 'before ')} {c['bytes'] / 1e6:,.2f} MB"
                       for c in cs)
    parts.append(f'{direction} {axes}: {kind} x{len(cs)} ({scopes})')
  return '; '.join(parts) or 'none'


def format_row(row: dict) -> str:
  """The report of one target, as printed."""
  m, usable = row['memory'], row['memory_usable']
  proj = row['projection']
  flops = row['flops']
  lines = [
      f"{row['target']} {row['topology']}: {row['devices']} x {row['device']}, mesh {row['mesh']} "
      f"(data x model), {row['dtype']}, batch {row['batch']} ({row['batch_per_device']} per device)",
      '  compile: ' + ', '.join(f'{k} {v:.1f} s' for k, v in row['compile_s'].items()),
      f"  memory per device (train step): arguments {_gb(m['arguments'])}, outputs {_gb(m['outputs'])} "
      f"({_gb(m['aliased'])} donated), temp {_gb(m['temp'])}, total {_gb(m['total'])} of "
      f"{_gb(usable)} usable ({_gb(row['memory_device'])} device): "
      + ('fits' if row['fits'] else 'DOES NOT FIT'),
  ]
  if 'eval_memory' in row:
    lines.append(f"  memory per device (eval step, {row['batch']} examples): total "
                 f"{_gb(row['eval_memory']['total'])}: " + ('fits' if row['eval_fits'] else 'DOES NOT FIT'))
  if 'largest_batch_per_device' in row:
    lines.append(f"  largest per-device batch that fits: {row['largest_batch_per_device']:,} "
                 f"(compiled at {', '.join(str(b) for b in row['batches_compiled'])})")
  cost = (f"{flops['cost_analysis'] / 1e9:,.1f} GFLOP" if flops['cost_analysis'] is not None
          else 'none given for these compile-only devices')
  lines += [
      f"  FLOPs per device-step: cost analysis {cost}; the network's count "
      f"{flops['network'] / 1e9:,.1f} GFLOP (3 x forward x batch / devices)",
      f"  collectives: {_summarize_collectives(row['collectives'])}",
      '  paper\'s exchange (Sec. 3.2): ' + ('; '.join(row['exchange_problems']) or (
          'only before conv3, fc6, fc7, fc8, and their transposes' if row['mesh'].endswith('x2')
          else 'both columns on each device, nothing crosses between devices for them')),
      f"  convolutions in: {', '.join(row['convolution_dtypes']) or '-'}",
      f"  projected, not measured (roofline): {proj['images_per_s_per_device']:,.0f} images/s per device, "
      f"{proj['bound']}-bound (compute {proj['compute_ms']:.2f} ms at "
      f"{proj['peak_flops'] / 1e12:,.1f} TFLOP/s, "
      f"memory {row['bytes'] / 1e9:,.2f} GB in {proj['memory_ms']:.2f} ms at "
      f"{proj['memory_bandwidth'] / 1e12:,.2f} TB/s)",
  ]
  return '\n'.join(lines)


# The targets `--table` compiles (1, 2, 8 and 2x8 H100s; A100; TPU v4 and v5e
# slices of 4 chips and one of 16): (target, topology, mesh.model).
TABLE = (('h100', '1x1x1', 1), ('h100', '1x1x2', 2), ('h100', '1x1x8', 2), ('h100', '2x1x8', 2),
         ('a100', '1x1x2', 2), ('v4', '2x2x1', 2), ('v5e', '2x2', 2), ('v5e', '4x4', 2))


def markdown_table(rows: list[dict]) -> str:
  """The rows as a markdown table (docs/targets.md's form)."""
  out = ['| target | mesh | dtype | batch (per device) | memory per device | largest batch per device '
         '| collectives on model / data (train step) | projected images/s per device | command |',
         '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    count = lambda axis: sum(axis in c['axes'] for c in r['collectives'])
    ok = ('EXTRA' if r['exchange_problems'] else 'the paper\'s 4 + 3 transposes'
              if r['mesh'].endswith('x2') else 'both columns on each device')
    out.append(
        f"| {r['devices']} x {r['device']} (`{r['target']} {r['topology']}`) | {r['mesh']} | {r['dtype']} "
        f"| {r['batch']} ({r['batch_per_device']}) "
        f"| {_gb(r['memory']['total'])} of {_gb(r['memory_usable'])} "
        f"| {r.get('largest_batch_per_device', '-')} | {count('model')} ({ok}) / {count('data')} "
        f"| {r['projection']['images_per_s_per_device']:,.0f} ({r['projection']['bound']}) "
        f"| `{r['command'].replace('python -m alexnet_jax.aot --config=configs/paper.py ', '')}` |")
  return '\n'.join(out)

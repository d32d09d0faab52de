"""The run's train and eval steps compiled for GPUs and TPUs that are not here.

`python -m alexnet_jax.aot --config=configs/paper.py --target=h100 --topology=1x1x2`

builds the run's own `parallel.Layout` on compile-only devices of the target
(`alexnet_jax.targets`) and compiles the steps `train.py` and `evaluate.py` run, with the
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
import json
import math
import os
import re
import sys
import time

from alexnet_jax import targets


def _bool_flag(args: list[str], name: str) -> bool | None:
  """An absl boolean flag's value in `args` (--name, --name=false, --noname), read before
  absl parses them; None where absent."""
  value = None
  for arg in args:
    if arg == '--':
      break
    key, has_value, text = arg.lstrip('-').partition('=')
    if not arg.startswith('-'):
      continue
    if key == name:
      value = not has_value or text.lower() in ('true', 't', '1')
    elif key == f'no{name}' and not has_value:
      value = False
  return value


def _before_jax(args: list[str]) -> None:
  """`python -m alexnet_jax.aot ARGS`, before anything imports the compile-only backends:
  --install_compilers installs them (and stops, where it is the only flag but --dry_run);
  --help needs none; anything else re-executes this command with their folder on the path,
  or stops with one line where it is missing."""
  install = _bool_flag(args, 'install_compilers')
  args = [a for a in args if _bool_flag([a], 'install_compilers') is None]
  if install:
    try:
      targets.install_compilers(dry_run=bool(_bool_flag(args, 'dry_run')))
    except ValueError as e:
      sys.exit(f'error: {e}.')
    if all(_bool_flag([a], 'dry_run') is not None for a in args):
      sys.exit(0)
  if not any(a.lstrip('-').partition('=')[0] in ('help', 'helpshort', 'helpfull', 'h', '?')
             for a in args if a.startswith('-')):
    targets.use_compilers(args)


if __name__ == '__main__':
  # The package (alexnet_jax/__init__.py) has imported jax without the plugins by now; the
  # process that compiles is a fresh one whose jax sees them from its first import.
  _before_jax(sys.argv[1:])

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import evaluate, model, optim, parallel, storage, train  # noqa: E402
from alexnet_jax.data import augment as data_augment  # noqa: E402
from alexnet_jax.data import spec as data_spec  # noqa: E402
from alexnet_jax.data import statistics  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

# ILSVRC-2012's training set (Sec. 2): it sets the learning-rate schedule's step
# boundaries, constants in the compiled step.
IMAGENET_TRAIN_IMAGES = 1_281_167
# JAX preallocates this fraction of a GPU's memory for XLA (XLA_PYTHON_CLIENT_MEM_FRACTION);
# a program fits when it fits there. A TPU program may use all of its HBM.
GPU_MEMORY_FRACTION = float(os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.75'))
# The batch search's granularity, per device.
BATCH_STEP = 8
# The paper's exchanges: the layers that read both columns (Sec. 3.2, Fig. 2).
EXCHANGES = ('conv3', 'fc6', 'fc7', 'fc8')

_COLLECTIVE = re.compile(r'= (?P<result>.*?) (?P<kind>all-gather|all-reduce|reduce-scatter|'
                         r'collective-permute|all-to-all)(?:-start)?\(')
_SHAPE = re.compile(r'\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64)\[([\d,]*)\]')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4,
          'f32': 4, 's64': 8, 'u64': 8, 'f64': 8}


def _shape_bytes(dtype: str, dims: str) -> int:
  return _BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of a compiled program."""
  kind: str  # 'all-gather', 'all-reduce', 'reduce-scatter', ...
  axes: tuple[str, ...]  # The mesh axes its groups span: ('model',), ('data',), both, or ().
  bytes: int  # Its result's size on one device.
  backward: bool  # Part of the gradient (a transpose), from JAX's name stack.
  scope: str  # 'exchange_before_conv3', ..., or the op's JAX name ('' where XLA gave none).
  elements: int = 0  # Its (last) result's element count.


def _replica_groups(line: str, devices: int) -> list[list[int]]:
  """The replica groups of an HLO collective, in either of HLO's two spellings."""
  explicit = re.search(r'replica_groups=\{(\{[\d,{}]*\})?\}', line)
  if explicit:
    groups = [[int(i) for i in g.split(',') if i] for g in re.findall(r'\{([\d,]*)\}', explicit.group(0))]
    return [g for g in groups if g] or [list(range(devices))]
  # Iota form: [groups, size]<=[dims] with an optional transpose T(perm).
  iota = re.search(r'replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', line)
  if not iota:
    return [list(range(devices))]
  shape = [int(i) for i in iota.group(1).split(',')]
  ids = np.arange(math.prod(int(i) for i in iota.group(2).split(','))).reshape(
      [int(i) for i in iota.group(2).split(',')])
  if iota.group(3):
    ids = ids.transpose([int(i) for i in iota.group(3).split(',')])
  return ids.reshape(shape).tolist()


def collectives(hlo_text: str, mesh_shape: tuple[int, int]) -> list[Collective]:
  """Every collective in an optimized HLO module of a program over a ('data', 'model')
  mesh of `mesh_shape`, whose devices are numbered in the mesh's order."""
  data, model_size = mesh_shape
  found = []
  for line in hlo_text.splitlines():
    match = _COLLECTIVE.search(line)
    if not match:
      continue
    result = _SHAPE.findall(match.group('result'))
    # An async all-gather's result is (operand, output): its size is the output's.
    size = (_shape_bytes(*result[-1]) if match.group('kind') == 'all-gather'
            else sum(_shape_bytes(*s) for s in result))
    axes = set()
    for group in _replica_groups(line, data * model_size):
      coords = [divmod(i, model_size) for i in group]
      if len({d for d, _ in coords}) > 1:
        axes.add('data')
      if len({m for _, m in coords}) > 1:
        axes.add('model')
    op_name = re.search(r'op_name="([^"]*)"', line)
    op_name = op_name.group(1) if op_name else ''
    exchange = re.search(r'exchange_before_\w+', op_name)
    found.append(Collective(match.group('kind'), tuple(a for a in parallel.AXES if a in axes), size,
                            'transpose(' in op_name,
                            exchange.group(0) if exchange else op_name.split(')/')[-1],
                            math.prod(int(d) for d in result[-1][1].split(',') if d) if result else 0))
  return _name_rewritten_transposes(found)


def _name_rewritten_transposes(found: list[Collective]) -> list[Collective]:
  """XLA:TPU turns some small reduce-scatters into an all-reduce (and a slice) and drops
  their JAX names. On the model axis such an all-reduce is the transpose of the forward
  gather whose output has its element count and whose own transpose is missing: named so."""
  gathers = {c.scope: c.elements for c in found
             if c.kind == 'all-gather' and not c.backward and c.scope.startswith('exchange_before_')}
  named = {c.scope for c in found if c.backward and c.scope.startswith('exchange_before_')}
  out = []
  for c in found:
    if c.kind == 'all-reduce' and c.scope == '' and c.axes == ('model',):
      match = [s for s, n in gathers.items() if n == c.elements and s not in named]
      if match:
        named.add(match[0])
        c = dataclasses.replace(c, backward=True, scope=match[0])
    out.append(c)
  return out


def exchange_problems(found: list[Collective], model_size: int) -> list[str]:
  """What, if anything, crosses the 'model' axis beyond the paper's exchanges.

  Forward, the columns' devices may talk only before conv3, fc6, fc7 and fc8, once each;
  backward, only in those exchanges' transposes (an all-gather's is a reduce-scatter; the
  sum before fc8 needs none, the logits' gradient being the same on every device).
  """
  if model_size == 1:
    return [f'{c.kind} {c.scope} crosses the model axis' for c in found if 'model' in c.axes]
  problems = []
  on_model = [c for c in found if 'model' in c.axes]
  forward = sorted(c.scope for c in on_model if not c.backward)
  expected = sorted(f'exchange_before_{layer}' for layer in EXCHANGES)
  if forward != expected:
    problems.append(f'forward collectives on the model axis are {forward}, not the paper\'s {expected}')
  backward = sorted(c.scope for c in on_model if c.backward)
  transposes = sorted(f'exchange_before_{layer}' for layer in EXCHANGES[:-1])
  if backward != transposes:
    problems.append(f'backward collectives on the model axis are {backward}, not the transposes '
                    f'{transposes}')
  return problems


_DEFINITION = re.compile(r'^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = (?P<type>\([^=]*?\)|\S+) '
                         r'(?P<op>[\w\-]+)\((?P<args>.*)$')


def _instructions(hlo_text: str):
  """(computation, name, result shapes, opcode, operand names) of each HLO instruction;
  operand types are looked up by name, as optimized GPU HLO prints none."""
  computation = None
  for line in hlo_text.splitlines():
    if line and not line.startswith(' ') and line.rstrip().endswith('{'):
      computation = 'ENTRY' if line.startswith('ENTRY') else line.split()[0]
      continue
    match = _DEFINITION.match(line)
    if match:
      args = match.group('args').split('), ')[0]  # The operands, before the attributes.
      yield (computation, match.group('name'), _SHAPE.findall(match.group('type')), match.group('op'),
             re.findall(r'%([\w.\-]+)', args))


def hbm_bytes(hlo_text: str) -> int:
  """An estimate of a compiled program's memory traffic per device: each kernel of the
  entry computation reads its operands from and writes its results to HBM.

  For backends whose cost analysis reports no 'bytes accessed' (the CUDA plugin's
  compile-only devices report no cost analysis at all).
  """
  no_kernel = {'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'after-all',
               'partition-id', 'replica-id'}
  results, total = {}, 0
  for computation, name, shapes, op, operands in _instructions(hlo_text):
    results[name] = shapes
    if computation == 'ENTRY' and op not in no_kernel and not op.endswith('-done'):
      total += sum(_shape_bytes(*x) for x in shapes)
      total += sum(_shape_bytes(*x) for o in operands for x in results.get(o, []))
  return total


def convolution_dtypes(hlo_text: str) -> list[str]:
  """The dtypes of the compiled program's convolution inputs (XLA's own convolutions, or
  cuDNN's calls)."""
  results, found = {}, set()
  for _, name, shapes, op, operands in _instructions(hlo_text):
    results[name] = shapes
    if op == 'convolution' or (op == 'custom-call' and '__cudnn$conv' in hlo_text and
                               name.startswith('cudnn-conv')):
      found.update(results[o][0][0] for o in operands[:2] if results.get(o))
  return sorted(found)


def network_flops(spec: model.Spec) -> float:
  """The network's forward FLOPs for one image: XLA's cost analysis of the unsharded,
  unoptimized forward pass on this machine's default backend, independent of the target."""
  shapes = model.param_shapes(spec)
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))
  image = jax.ShapeDtypeStruct((1, spec.image_size, spec.image_size, 3), jnp.float32)
  cost = jax.jit(lambda p, x: model.forward(p, x, spec)).lower(params, image).cost_analysis()
  return float(cost['flops'])


def _steps_per_epoch(config) -> int:
  return max(IMAGENET_TRAIN_IMAGES // config.batch_size, 1)


def _abstract(shape, dtype, sharding):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


@dataclasses.dataclass
class Compiled:
  """A compiled step and what its analyses say, per device."""
  seconds: float
  memory: dict  # arguments, outputs, aliased, temp, total (bytes).
  flops: float | None  # From the backend's cost analysis; None where it gives none.
  bytes: float  # From the cost analysis, else `hbm_bytes`.
  collectives: list[Collective]
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
  hlo = compiled.as_text()
  return Compiled(seconds, memory, float(cost['flops']) if cost and 'flops' in cost else None,
                  float(cost['bytes accessed']) if cost and 'bytes accessed' in cost else hbm_bytes(hlo),
                  collectives(hlo, (layout.data_size, layout.model_size)), hlo)


def _data(config, layout: parallel.Layout) -> data_spec.DataSpec:
  """config.data as training reads it on the target's platform (augment_on 'auto' is
  'device' on a GPU or TPU)."""
  return data_spec.DataSpec.from_config(config.data).for_backend(layout.mesh.devices.flat[0].platform)


def compile_train_step(config, layout: parallel.Layout, batch_size: int) -> Compiled:
  """train.py's step for a global batch of `batch_size` on `layout`'s devices, fed as
  training feeds it: uint8 stored images with each example's (epoch, index) where Sec.
  4.1's augmentation runs in the step, else float32 crops."""
  tx = optim.make_optimizer(config.optim, _steps_per_epoch(config))
  # The state's structure is built outside jax.set_mesh: optax builds it eagerly, and
  # nothing runs eagerly on compile-only devices.
  state = train.abstract_state(config, layout, tx)
  spec = _data(config, layout)
  # The statistics' values are constants of the step: ImageNet's stand in for the run's.
  augment = train.device_augment(spec, config.seed, statistics.imagenet_stats(spec.stored_size))
  batch = lambda shape, dtype: _abstract((batch_size,) + shape, dtype, layout.batch_sharding)
  labels = batch((), jnp.int32)
  if augment is not None:
    args = (state, batch((spec.stored_size, spec.stored_size, 3), jnp.uint8), labels,
            batch((), jnp.int32), batch((), jnp.int32))
  else:
    size = layout.spec.image_size
    args = (state, batch((size, size, 3), jnp.float32), labels)
  return _compile(train.make_train_step(layout, tx, batch_size, augment), args, layout)


def compile_eval_step(config, layout: parallel.Layout) -> Compiled:
  """evaluate.py's step for config.eval_batch_size examples of the config's most views,
  fed as evaluation feeds it (stored images where the views are cut in the step)."""
  views = 'ten' if 'ten' in config.eval_views else 'center'
  count = 10 if views == 'ten' else 1  # Sec. 4.1: five patches and their reflections.
  spec = _data(config, layout)
  n, crop = config.eval_batch_size, layout.spec.image_size
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


def _compile_or_none(config, layout, batch_size):
  """The train step, or None where the target's compiler itself says it does not fit."""
  try:
    return compile_train_step(config, layout, batch_size)
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' in str(e) or 'out of memory' in str(e).lower():
      return None
    raise


def largest_batch(config, layout: parallel.Layout, usable: int, first: Compiled,
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
    compiled = _compile_or_none(config, layout, b * layout.data_size)
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


def run(config, target: str, topology: str, *, max_batch: bool = True, eval_step: bool = True) -> dict:
  """Compiles the config's run for `target` on `topology`; returns the report as a dict."""
  devices, device = targets.devices(target, topology)
  layout = parallel.Layout.from_config(config, devices=devices)
  dtype = config.model.dtype
  usable = int(device.memory_bytes * (GPU_MEMORY_FRACTION if target in targets.GPUS else 1.0))
  batch = config.batch_size
  per_device = batch // layout.data_size
  step = compile_train_step(config, layout, batch)
  row = {
      'target': target, 'topology': topology, 'device': device.kind, 'devices': len(devices),
      'mesh': f'{layout.data_size}x{layout.model_size}', 'dtype': dtype, 'batch': batch,
      'batch_per_device': per_device, 'compile_s': {'train': round(step.seconds, 1)},
      'memory': step.memory, 'memory_usable': usable, 'memory_device': device.memory_bytes,
      'fits': step.memory['total'] <= usable,
  }
  if eval_step:
    ev = compile_eval_step(config, layout)
    row['compile_s']['eval'] = round(ev.seconds, 1)
    row['eval_memory'] = ev.memory
    row['eval_fits'] = ev.memory['total'] <= usable
    row['eval_collectives'] = [dataclasses.asdict(c) for c in ev.collectives]
  if max_batch or not row['fits']:
    row['largest_batch_per_device'], row['batches_compiled'] = largest_batch(
        config, layout, usable, step, per_device)
  analytic = 3 * network_flops(layout.spec) * batch / len(devices)  # Forward + backward (2x).
  row['flops'] = {'cost_analysis': step.flops, 'network': analytic}
  row['bytes'] = step.bytes
  row['collectives'] = [dataclasses.asdict(c) for c in step.collectives]
  row['exchange_problems'] = exchange_problems(step.collectives, layout.model_size)
  flops = step.flops if step.flops is not None else analytic
  peak = device.peak_flops[dtype]
  compute_s, memory_s = flops / peak, step.bytes / device.memory_bandwidth
  # The step's time on each device; the mesh processes `batch` images in it.
  row['projection'] = {
      'images_per_s_per_device': batch / max(compute_s, memory_s) / len(devices),
      'bound': 'compute' if compute_s >= memory_s else 'memory',
      'compute_ms': 1e3 * compute_s, 'memory_ms': 1e3 * memory_s,
      'peak_flops': peak, 'memory_bandwidth': device.memory_bandwidth, 'source': device.source}
  row['convolution_dtypes'] = convolution_dtypes(step.hlo)
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


# The targets the README's table holds (issue: 1, 2, 8 and 2x8 H100s; A100; TPU v4 and v5e
# slices of 4 chips and one of 16): (target, topology, mesh.model).
TABLE = (('h100', '1x1x1', 1), ('h100', '1x1x2', 2), ('h100', '1x1x8', 2), ('h100', '2x1x8', 2),
         ('a100', '1x1x2', 2), ('v4', '2x2x1', 2), ('v5e', '2x2', 2), ('v5e', '4x4', 2))


def _main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_file = config_flags.get_config_filename(FLAGS['config'])
  rows = []
  plan = ([(t, topo, m, d) for t, topo, m in TABLE for d in ('float32', 'bfloat16')
           if not FLAGS.table_targets or t in FLAGS.table_targets] if FLAGS.table else
          [(FLAGS.target, FLAGS.topology, None, d) for d in (FLAGS.dtype or [FLAGS.config.model.dtype])])
  for target, topology, model_size, dtype in plan:
    targets.check(target, topology)  # Every row's flags before the first compile.
  if FLAGS.dry_run:
    for target, topology, model_size, dtype in plan:
      config = FLAGS.config.copy_and_resolve_references()
      if model_size is not None:
        config.mesh.model = model_size
      devices, device = targets.devices(target, topology)
      layout = parallel.Layout.from_config(config, devices=devices)
      print(f'dry run: {target} {topology} {dtype}: {len(devices)} x {device.kind}, {layout}; '
            'nothing compiled.')
    return 0
  for target, topology, model_size, dtype in plan:
    config = FLAGS.config.copy_and_resolve_references()
    config.model.dtype = dtype
    if model_size is not None:
      config.mesh.model = model_size
    print(f'Compiling {target} {topology} {dtype} ...', flush=True)
    row = run(config, target, topology, max_batch=FLAGS.max_batch, eval_step=FLAGS.eval_step)
    row['command'] = (f'python -m alexnet_jax.aot --config={config_file} --target={target} '
                      f'--topology={topology} --dtype={dtype}'
                      + f' --config.mesh.model={config.mesh.model}')
    print(format_row(row), flush=True)
    rows.append(row)
    if FLAGS.json:  # A local file or an object (gs://...), rewritten whole after each row.
      storage.write_whole(FLAGS.json, json.dumps(rows, indent=1))
  if FLAGS.markdown:
    print(markdown_table(rows))
  missing = [r for r in rows if not r['fits']]
  for r in missing:
    print(f"{r['target']} {r['topology']} {r['dtype']}: batch {r['batch']} needs "
          f"{_gb(r['memory']['total'])} per device of {_gb(r['memory_usable'])}; the largest per-device "
          f"batch that fits is {r['largest_batch_per_device']} (--config.batch_size="
          f"{r['largest_batch_per_device'] * (r['batch'] // r['batch_per_device'])}).")
  return 1 if missing else 0


def markdown_table(rows: list[dict]) -> str:
  """The README's Targets table."""
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


def main():
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # Compile-only devices need no accelerator here: JAX itself runs on the CPU, and the
  # CUDA plugin is not initialized (it would look for a GPU and print why it found none).
  jax.config.update('jax_platforms', os.environ.get('JAX_PLATFORMS') or 'cpu')
  config_flags.DEFINE_config_file('config', None, 'Configuration file (the run to compile).',
                                  lock_config=True)
  flags.DEFINE_string('target', 'h100', f'One of {", ".join(targets.TARGETS)}.')
  flags.DEFINE_string('topology', '1x1x2', 'GPUs: HOSTSx1xGPUS_PER_HOST (1x1x2: one host, two '
                      'GPUs). TPUs: the chip grid (v5e 2x2, v4 2x2x1).')
  flags.DEFINE_list('dtype', None, 'float32 and/or bfloat16 (default: config.model.dtype).')
  flags.DEFINE_bool('max_batch', True, 'Find the largest per-device batch that fits, by compiling.')
  flags.DEFINE_bool('eval_step', True, 'Also compile the eval step (10 views when eval_views has them).')
  flags.DEFINE_bool('table', False, 'Compile every target of the README table (alexnet_jax.aot.TABLE), '
                    'float32 and bfloat16.')
  flags.DEFINE_list('table_targets', None, 'With --table: only these targets (e.g. h100,a100).')
  flags.DEFINE_bool('markdown', False, 'Print the rows as the README\'s markdown table at the end.')
  flags.DEFINE_string('json', None, 'Write the rows to this JSON file.')
  flags.DEFINE_bool('dry_run', False, 'Check the flags, config, targets and layouts on the '
                    'compile-only devices; compile nothing. With --install_compilers alone: print '
                    'the pip command; install nothing.')
  flags.DEFINE_bool('install_compilers', False, 'Install the compile-only backends (the CUDA PJRT '
                    f'plugin, ptxas, libtpu: {" ".join(targets.COMPILERS)}) into their own folder, '
                    f'${targets.COMPILERS_ENV} or {targets.compilers_dir()}, which this tool puts on its '
                    'path; alone, it stops there.')
  flags.mark_flags_as_required(['config'])

  def checked(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    try:
      return _main(argv)
    except ValueError as e:  # Bad flags, config or topology: one line that says what to change.
      sys.exit(f'error: {e}')

  app.run(checked)


if __name__ == '__main__':
  main()

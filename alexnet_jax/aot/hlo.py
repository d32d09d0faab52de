"""Reading compiled programs' HLO text: the collectives (kind, mesh axis, bytes), whether
the columns exchange only where the paper says (Sec. 3.2), HBM bytes and convolution dtypes."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from alexnet_jax.parallel import AXES

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
    found.append(Collective(match.group('kind'), tuple(a for a in AXES if a in axes), size,
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

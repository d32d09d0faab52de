"""alexnet_jax.aot (programs, hlo): the run's steps compiled for H100 and TPU without the hardware.

The paper's exchange (Sec. 3.2) is checked on compiled programs for three backends: the
columns' devices talk only before conv3, fc6, fc7 and fc8 (and, backward, in those
exchanges' transposes), and the gradient reduction is on the data axis. The GPU and TPU
programs need the compile-only backends (the CUDA PJRT plugin and libtpu, in their own
folder: `python -m alexnet_jax.aot --install_compilers`, which CI runs), which conftest.py
puts on this process's path.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import config as config_lib, model, parallel
from alexnet_jax.aot import hlo as hlo_lib
from alexnet_jax.aot import programs, targets
from alexnet_jax.config import RunSpec

REPO = pathlib.Path(__file__).resolve().parents[2]
EXCHANGE_SCOPES = sorted(f'exchange_before_{layer}' for layer in ('conv3', 'fc6', 'fc7', 'fc8'))


def _have(module):
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # Its parent package is missing.
    return False


def _needs(module):
  # CI installs the compile-only backends: there, a missing plugin is a failure, not a skip.
  if os.environ.get('CI'):
    return pytest.mark.skipif(False, reason='')
  return pytest.mark.skipif(not _have(module), reason=f'needs {module}: {targets.INSTALL_COMPILERS}')


def _config(mesh_data, mesh_model, batch, dtype='float32', small=False):
  cfg = config_lib.paper_config()
  cfg.mesh.data, cfg.mesh.model = mesh_data, mesh_model
  cfg.batch_size = cfg.eval_batch_size = batch
  cfg.model.dtype = dtype
  if small:  # Narrow layers, the paper's structure: the same collectives, faster to compile.
    cfg.model.conv_features = (8, 16, 24, 24, 16)
    cfg.model.fc_features = (32, 32)
  return cfg


def _check_paper_exchange(found, data):
  """The model-axis collectives of a train step are the paper's exchanges and their
  transposes, each once; the gradient is reduced over 'data' only where there is one."""
  on_model = [c for c in found if 'model' in c.axes]
  assert sorted(c.scope for c in on_model if not c.backward) == EXCHANGE_SCOPES
  # An all-gather's transpose is a reduce-scatter; fc8's exchange is a sum of the
  # columns' partial logits, whose transpose needs no communication.
  assert sorted(c.scope for c in on_model if c.backward) == EXCHANGE_SCOPES[:3]
  assert all(c.axes == ('model',) for c in on_model), on_model
  assert hlo_lib.exchange_problems(found, 2) == []
  on_data = [c for c in found if c.axes == ('data',)]
  if data > 1:
    assert any(c.backward and c.kind == 'all-reduce' for c in on_data), found  # The gradient sum.
  else:
    assert not on_data


# ------------------------------------------------------------------ the HLO reader, by hand


def test_replica_groups_in_both_spellings():
  line = 'x = f32[4] all-reduce(f32[4] %a), replica_groups={{0,2},{1,3}}, to_apply=%add'
  assert hlo_lib._replica_groups(line, 4) == [[0, 2], [1, 3]]
  # XLA's iota form: iota(4) as [2, 2], transposed by (1, 0), as 2 groups of 2.
  line = 'x = f32[4] all-reduce(f32[4] %a), replica_groups=[2,2]<=[2,2]T(1,0), to_apply=%add'
  assert hlo_lib._replica_groups(line, 4) == [[0, 2], [1, 3]]
  line = 'x = f32[4] all-reduce(f32[4] %a), replica_groups=[1,4]<=[4], to_apply=%add'
  assert hlo_lib._replica_groups(line, 4) == [[0, 1, 2, 3]]
  assert hlo_lib._replica_groups('x = f32[4] all-reduce(f32[4] %a), replica_groups={}', 4) == [[0, 1, 2, 3]]


def test_collectives_read_kind_axis_size_and_direction():
  hlo = '\n'.join([
      # Forward all-gather on a 2x2 (data x model) mesh: devices 0,1 share a data index.
      '%ag = (bf16[8,13,13,128]{3,2,1,0}, bf16[8,13,13,256]{3,2,1,0}) all-gather-start('
      'bf16[8,13,13,128]{3,2,1,0} %x), channel_id=1, replica_groups={{0,1},{2,3}}, dimensions={3}, '
      'metadata={op_name="jit(train_step)/jvp()/shard_map/AlexNet/exchange_before_conv3/all_gather"}',
      '%rs = f32[8,2048]{1,0} reduce-scatter(f32[8,4096]{1,0} %y), channel_id=2, '
      'replica_groups=[2,2]<=[4], dimensions={1}, to_apply=%add, '
      'metadata={op_name="jit(train_step)/transpose(jvp())/shard_map/AlexNet/exchange_before_fc7/'
      'reduce_scatter"}',
      '%ar = (f32[48]{0}, f32[11,11,3,48]{3,2,1,0}) all-reduce(f32[48]{0} %b, f32[11,11,3,48]{3,2,1,0} %k), '
      'channel_id=3, replica_groups=[2,2]<=[2,2]T(1,0), to_apply=%add, '
      'metadata={op_name="jit(train_step)/transpose(jvp())/shard_map/AlexNet/conv1/psum_invariant"}',
  ])
  found = hlo_lib.collectives(hlo, (2, 2))
  assert [(c.kind, c.axes, c.bytes, c.backward, c.scope) for c in found] == [
      ('all-gather', ('model',), 2 * 8 * 13 * 13 * 256, False, 'exchange_before_conv3'),
      ('reduce-scatter', ('model',), 4 * 8 * 2048, True, 'exchange_before_fc7'),
      ('all-reduce', ('data',), 4 * (48 + 11 * 11 * 3 * 48), True,
       'shard_map/AlexNet/conv1/psum_invariant'),
  ]


def test_exchange_problems_name_what_crosses_the_model_axis():
  ok = [hlo_lib.Collective('all-gather', ('model',), 1, False, s) for s in EXCHANGE_SCOPES[:3]]
  ok += [hlo_lib.Collective('all-reduce', ('model',), 1, False, EXCHANGE_SCOPES[3])]
  ok += [hlo_lib.Collective('reduce-scatter', ('model',), 1, True, s) for s in EXCHANGE_SCOPES[:3]]
  assert hlo_lib.exchange_problems(ok, 2) == []
  extra = ok + [hlo_lib.Collective('all-reduce', ('data', 'model'), 1, True, 'AlexNet/fc8/psum_invariant')]
  (problem,) = hlo_lib.exchange_problems(extra, 2)
  assert 'AlexNet/fc8/psum_invariant' in problem and 'backward' in problem


def test_hbm_bytes_adds_each_entry_kernels_operands_and_results():
  hlo = '\n'.join([
      'HloModule m', '%fused (p: f32[4]) -> f32[4] {', '  %p = f32[4]{0} parameter(0)',
      '  ROOT %n = f32[4]{0} negate(f32[4]{0} %p)', '}', 'ENTRY %main (a: f32[4], b: bf16[2,3]) -> f32[4] {',
      '  %a = f32[4]{0} parameter(0)', '  %b = bf16[2,3]{1,0} parameter(1)',
      '  %f = f32[4]{0} fusion(f32[4]{0} %a), kind=kLoop, calls=%fused, metadata={op_name="x"}',
      '  %c = bf16[2,3]{1,0} copy(bf16[2,3]{1,0} %b)',
      '  ROOT %t = (f32[4]{0}, bf16[2,3]{1,0}) tuple(f32[4]{0} %f, bf16[2,3]{1,0} %c)', '}'])
  assert hlo_lib.hbm_bytes(hlo) == (16 + 16) + (12 + 12)  # The fusion and the copy: in and out.


@pytest.mark.parametrize('fixed, per_image, usable', [(3e8, 1.3e7, 6e10), (1e9, 2.1e6, 1.6e10),
                                                      (5e8, 1e8, 4e8 + 5e8)])
def test_largest_batch_finds_the_formula_s_answer(monkeypatch, fixed, per_image, usable):
  """On a memory that grows linearly with the batch (with a 1% wobble, as real programs'
  temp does), the search lands on the largest multiple of 8 under `usable`."""
  rng = np.random.default_rng(0)
  memory = {}

  def fake_compile(config, layout, batch):
    b = batch // layout.data_size
    memory.setdefault(b, fixed + per_image * b * (1 + 0.01 * rng.uniform(-1, 1)))
    return programs.Compiled(0.0, {'total': memory[b]}, None, 0.0, [], '')

  class Layout:
    data_size = 2

  monkeypatch.setattr(programs, '_compile_or_none', fake_compile)
  first = fake_compile(None, Layout, 2 * 64)
  found, tried = programs.largest_batch(None, Layout, int(usable), first, 64, max_compiles=20)
  fits = [b for b in range(8, 100_000, 8) if memory.get(b, fixed + per_image * b) <= usable]
  want = max(fits, default=0)
  assert found == want
  assert want == 0 or memory[want] <= usable < memory[want + 8]
  assert len(tried) <= 8  # Two compiles, then the line's crossing and its neighbour.


# ------------------------------------------------------------------ compiled programs


@pytest.mark.parametrize('shape', [(1, 2), (2, 2)])
def test_cpu_train_step_talks_only_where_the_paper_says(shape):
  cfg = _config(*shape, batch=4, small=True)
  layout = parallel.Layout.for_run(RunSpec.from_config(cfg),
                                   devices=jax.devices()[:shape[0] * shape[1]])
  compiled = programs.compile_train_step(RunSpec.from_config(cfg), layout, cfg.batch_size)
  _check_paper_exchange(compiled.collectives, shape[0])


def test_network_flops_match_the_layer_formula():
  spec = model.Spec.from_config(config_lib.paper_config().model)

  def taps(n_in, k, stride, pad_before, n_out):
    """Kernel taps that land on the image (not on zero padding), summed over outputs."""
    return sum(0 <= o * stride - pad_before + t < n_in for o in range(n_out) for t in range(k))

  conv1 = taps(224, 11, 4, model.conv1_padding(224)[0], 55) ** 2 * 3 * 96
  conv2 = taps(27, 5, 1, 2, 27) ** 2 * 48 * 256  # Per column: 48 maps in, 128 out; x 2.
  conv345 = taps(13, 3, 1, 1, 13) ** 2 * (256 * 384 + 192 * 384 + 192 * 256)
  fc = 9216 * 4096 + 4096 * 4096 + 4096 * 1000
  multiply_adds = conv1 + conv2 + conv345 + fc
  flops = programs.network_flops(spec)
  # XLA counts 2 per multiply-add of the taps on the image, plus the elementwise layers
  # (biases, ReLUs, LRN, pooling, dropout): a few percent more. Counting padded taps too
  # gives the README's other figure, 1.449 G.
  assert 2 * multiply_adds <= flops <= 1.08 * 2 * multiply_adds


@_needs('jax_plugins.xla_cuda12')
def test_h100_pair_compiles_the_paper_split_in_bfloat16():
  devices, device = targets.devices('h100', '1x1x2')
  assert [d.device_kind for d in devices] == ['NVIDIA H100 80GB HBM3'] * 2
  cfg = _config(1, 2, batch=16, dtype='bfloat16')
  layout = parallel.Layout.for_run(RunSpec.from_config(cfg), devices=devices)
  compiled = programs.compile_train_step(RunSpec.from_config(cfg), layout, cfg.batch_size)
  _check_paper_exchange(compiled.collectives, 1)
  # Memory: the arguments hold at least this device's half of the params and momentum
  # (float32), and the whole fits in the device's usable memory.
  half_params = 4 * sum(np.prod(s) for s in jax.tree.leaves(
      model.param_shapes(layout.spec), is_leaf=lambda x: isinstance(x, tuple))) / 2
  assert compiled.memory['arguments'] >= 2 * 0.95 * half_params
  assert compiled.memory['total'] < device.memory_bytes * programs.GPU_MEMORY_FRACTION
  # bfloat16 convolutions: cuDNN's calls take bf16 operands, and nothing else.
  assert hlo_lib.convolution_dtypes(compiled.hlo) == ['bf16']
  # conv1-5 forward and their kernels' gradients, and the inputs' gradients of conv2-5 (the
  # image needs none): one cuDNN call each.
  assert compiled.hlo.count('__cudnn$conv') == 5 + 5 + 4


@_needs('libtpu')
def test_tpu_v5e_slice_compiles_the_paper_split():
  # XLA:TPU writes two of this narrow network's transposes as all-reduces without JAX
  # names: `hlo_lib.collectives` names them after their gathers (README, Targets).
  devices, device = targets.devices('v5e', '2x2')
  assert len(devices) == 4
  cfg = _config(2, 2, batch=16, small=True)
  layout = parallel.Layout.for_run(RunSpec.from_config(cfg), devices=devices)
  compiled = programs.compile_train_step(RunSpec.from_config(cfg), layout, cfg.batch_size)
  _check_paper_exchange(compiled.collectives, 2)
  assert compiled.memory['total'] < device.memory_bytes
  # XLA's cost analysis against the network's count (forward and twice that backward),
  # less conv1's input gradient, which the image does not need: conv1's forward FLOPs over
  # the taps that land on the image (2 per multiply-add, 8 maps of 3 channels).
  conv1 = 2 * 602 ** 2 * 3 * cfg.model.conv_features[0]  # 602: test_network_flops' taps.
  want = (3 * programs.network_flops(layout.spec) - conv1) * cfg.batch_size / len(devices)
  assert abs(compiled.flops - want) < 0.1 * want  # Backends count elementwise work apart.


@pytest.mark.skipif(not os.environ.get('CI') and targets.compilers_problem() is not None,
                    reason=f'needs the compile-only backends: {targets.INSTALL_COMPILERS}')
@pytest.mark.parametrize('target, topology, devices', [('h100', '1x1x2', '2 x NVIDIA H100 80GB HBM3')])
def test_the_aot_command_compiles_from_the_run_time_environment(target, topology, devices):
  """`python -m alexnet_jax.aot` from the run-time environment (no JAX_PLATFORMS, the
  compilers' folder not on PYTHONPATH): it re-executes itself with the folder on its path and
  compiles the narrow network's train step, once. (TPU v5e compiles from that folder in the
  in-process tests above; one compile shows the command's own path.)"""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  result = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.aot', '--config=configs/paper.py', f'--target={target}',
       f'--topology={topology}', '--config.batch_size=16', '--config.eval_batch_size=16',
       '--config.model.conv_features=(8,16,24,24,16)', '--config.model.fc_features=(32,32)',
       '--nomax_batch', '--noeval_step'], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'{target} {topology}: {devices}, mesh ' in result.stdout, result.stdout
  assert ("paper's exchange (Sec. 3.2): only before conv3, fc6, fc7, fc8, and their transposes"
          in result.stdout), result.stdout
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]


def test_bad_targets_and_topologies_are_one_line_errors():
  with pytest.raises(ValueError, match=r"Unknown target 'h200': choose one of h100, a100, v4"):
    targets.devices('h200', '1x1x2')
  with pytest.raises(ValueError, match=r"GPU topology '2x2' is not HOSTSx1xGPUS"):
    targets.devices('h100', '2x2')
  with pytest.raises(ValueError, match=r"TPU topology '1x1x2x' is not a chip grid"):
    targets.devices('v5e', '1x1x2x')


def test_an_unnamed_all_reduce_of_a_gathered_shape_is_that_gather_s_transpose():
  hlo = '\n'.join([
      '%ag = bf16[8,32]{1,0} all-gather(bf16[8,16]{1,0} %x), replica_groups={{0,1},{2,3}}, dimensions={1}, '
      'metadata={op_name="jit(train_step)/jvp()/shard_map/AlexNet/exchange_before_fc7/all_gather"}',
      # XLA:TPU's rewrite of the transpose's reduce-scatter: an all-reduce with no name.
      '%ar = f32[8,32]{1,0} all-reduce(f32[8,32]{1,0} %y), replica_groups={{0,1},{2,3}}, to_apply=%add',
      # Not a gathered shape: left unnamed, and so counted against the paper's exchange.
      '%other = f32[8,31]{1,0} all-reduce(f32[8,31]{1,0} %z), replica_groups={{0,1},{2,3}}, to_apply=%add',
  ])
  found = hlo_lib.collectives(hlo, (2, 2))
  assert [(c.kind, c.backward, c.scope) for c in found] == [
      ('all-gather', False, 'exchange_before_fc7'), ('all-reduce', True, 'exchange_before_fc7'),
      ('all-reduce', False, '')]

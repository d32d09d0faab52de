"""How far apart two float32 implementations of the same sums may be: the tolerance of the
tests that compare two compilations, shardings or mappers of the network (a plain module,
not a test module).

Reordering a float32 sum of K terms changes it by at most about (K - 1) * eps * sum|t|
(Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., Sec. 4.2). Two
implementations of a layer (XLA's and YNNPACK's convolutions, one device against a
sharded mesh, pmap against shard_map, and the same program when a busy machine's threads
split a reduction differently) add the same terms in other orders, and every value of
the network comes out of a chain of such sums. So a compared tensor may differ by
eps * K * scale, with K the longest sum on the way to it and the scale of its terms taken
as the tensor's largest magnitude. That is the worst case rather than the typical
sqrt(K) * eps, which is what makes the comparison hold under any load; a real error (a
wrong window, a dropped term, a wrong column) is off by a sizeable fraction of the scale,
far above it.
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def longest_sum(params, batch_size: int = 0, image_size: int = 224) -> int:
  """The most terms any float32 sum of the network adds: a layer's fan-in (its kernel's
  inputs per output unit) in the forward pass and the backward pass to the inputs, and,
  with `batch_size` (gradients), a kernel gradient's sum over the batch and the output
  positions, largest for conv1 (stride 4: about (image_size / 4)^2 positions)."""
  fan_ins = []
  for name, layer in params.items():
    shape = np.shape(layer['kernel'])
    # Conv kernels end in (kh, kw, in, out), fully connected ones in (in, out); either may
    # have a leading column axis. The backward pass sums over (kh, kw, out) or (out).
    if name.startswith('conv'):
      fan_ins += [int(np.prod(shape[-4:-1])), int(np.prod(shape[-4:-2]) * shape[-1])]
    else:
      fan_ins += [shape[-2], shape[-1]]
  return max(fan_ins + [batch_size * (image_size // 4) ** 2])


def atol(terms: int, reference) -> float:
  """eps * K * the reference's largest magnitude (see the module docstring)."""
  return EPS32 * terms * float(np.max(np.abs(reference)))

"""The compiler options of alexnet_jax.parallel.compiler: applied on CPU, and the same numbers.

On CPU the layout's jitted functions compile with XLA's own convolutions instead of
YNNPACK's (faster here; the figures are in the README and come from
`python -m alexnet_jax.bench`, never from a test). These tests check that the option
reaches the compiled program, and that the gradients do not depend on it: XLA's YNNPACK
and Eigen convolutions are two independent implementations of the same sums.
"""

import jax
import numpy as np

from alexnet_jax import model, parallel
from alexnet_jax.parallel import compiler
from tests import tolerance


def _ynn_convolutions(compiled_text: str) -> int:
  """Convolutions inside YNNPACK fusions: each such fusion calls a computation whose
  body holds the convolution, so count the fused computations that do."""
  called = set()
  for line in compiled_text.splitlines():
    if '__ynn_fusion' in line and 'calls=' in line:
      called.add(line.split('calls=')[1].split(',')[0].strip().lstrip('%'))
  count, current = 0, None
  for line in compiled_text.splitlines():
    if line.rstrip().endswith('{') and not line.startswith(' '):
      name = line.split('(')[0].split()[-1].lstrip('%')
      current = name if name in called else None
    elif current and ' convolution(' in line:
      count += 1
  return count


def test_cpu_options_and_other_backends(make_mesh):
  want = {'xla_cpu_experimental_ynn_fusion_type': compiler.CPU_YNN_FUSIONS}
  assert compiler.options('cpu') == want
  assert compiler.options('gpu') is None and compiler.options('tpu') is None
  # Training asks for them first inside jax.set_mesh of a multi-device mesh: the options
  # must not depend on that (a probe compiled on one device there once failed silently).
  compiler.options.cache_clear()
  try:
    with jax.set_mesh(make_mesh(2, 2)):
      assert compiler.options('cpu') == want
  finally:
    compiler.options.cache_clear()


def test_layout_jit_keeps_convolutions_out_of_ynnpack_with_the_same_gradients(make_mesh):
  # The full-width network (XLA keeps small convolutions out of YNNPACK anyway), two images,
  # variance-preserving init so that every layer's gradient is far from zero.
  spec = model.Spec(init='he')
  params = model.init_params(jax.random.key(0), spec)
  images = jax.random.normal(jax.random.key(1), (2, 224, 224, 3))
  labels = jax.numpy.array([3, 998])
  layout = parallel.Layout(make_mesh(1, 1), spec, batch_sizes=(2,))
  grad_fn = jax.value_and_grad(layout.loss(2), has_aux=True)
  args = (layout.shard_params(params), jax.device_put(images, layout.batch_sharding),
          jax.device_put(labels, layout.batch_sharding),
          jax.device_put(jax.random.key(3), layout.replicated))

  with jax.set_mesh(layout.mesh):
    ours = layout.jit(grad_fn)
    plain = jax.jit(grad_fn)
    ours_text = ours.lower(*args).compile().as_text()
    plain_text = plain.lower(*args).compile().as_text()
    # XLA's default hands the convolutions (forward and both gradients) to YNNPACK;
    # with the options none is left there.
    assert _ynn_convolutions(plain_text) > 10
    assert _ynn_convolutions(ours_text) == 0 and ' convolution(' in ours_text
    (loss, _), grads = ours(*args)
    (ref_loss, _), ref_grads = plain(*args)

  # Tolerances from the float32 accumulation error of the longest sum, scaled by each
  # tensor's magnitude (tests/tolerance.py): the two compilations order their sums
  # differently, and a loaded machine changes Eigen's order again.
  terms = tolerance.longest_sum(params, batch_size=2, image_size=spec.image_size)
  np.testing.assert_allclose(float(loss), float(ref_loss), rtol=0,
                             atol=tolerance.atol(terms, float(ref_loss)))
  for name in ref_grads:
    for leaf in ('kernel', 'bias'):
      ref = np.asarray(ref_grads[name][leaf])
      assert np.abs(ref).max() > 0, (name, leaf)
      np.testing.assert_allclose(np.asarray(grads[name][leaf]), ref, rtol=0,
                                 atol=tolerance.atol(terms, ref), err_msg=f'{name} {leaf}')

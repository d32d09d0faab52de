"""XLA compiler options this network's jitted functions compile with, per backend.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default. For this network its
convolutions, and their gradients most of all, are slower than XLA's own (Eigen) ones and
use the second core poorly: `python -m alexnet_jax.bench --xla_defaults` shows the step
with and without them (docs/benchmarks.md). On CPU the train and evaluation steps, which
this package jits and calls itself, therefore compile with YNNPACK kept for matrix products
and reductions only. Other backends compile with XLA's defaults.

`alexnet_jax.apply` keeps a plain jax.jit: it is a pure function for users' own jit and
grad, and XLA accepts compiler options on the outermost jit only; wrap such code in
`compiler.jit` to get them. A user's own XLA_FLAGS choice of YNNPACK fusions wins over
this module's.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

_YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
# XLA's default list in jaxlib 0.10 (individual dot, individual convolution, reduce) less
# LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION: the train step compiles to the same program as
# with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution.
CPU_YNN_FUSIONS = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'


@functools.cache
def options(platform: str) -> dict[str, str] | None:
  """compiler_options for `jax.jit` on `platform` ('cpu', 'gpu', 'tpu'), or None."""
  if platform != 'cpu' or _YNN_OPTION in os.environ.get('XLA_FLAGS', ''):
    return None
  chosen = {_YNN_OPTION: CPU_YNN_FUSIONS}
  # A jaxlib that does not know the option (or these values) keeps its defaults rather
  # than failing. The probe takes no arguments: it compiles inside any jax.set_mesh.
  try:
    jax.jit(lambda: jnp.zeros(()), compiler_options=chosen).lower().compile()
  except Exception as e:  # pylint: disable=broad-except
    if _YNN_OPTION in str(e) or 'compile option' in str(e):
      return None
    raise
  return chosen


def jit(fun, *, platform: str | None = None, **kwargs):
  """`jax.jit(fun, **kwargs)` with this module's options for `platform` (default: JAX's
  default backend)."""
  return jax.jit(fun, compiler_options=options(platform or jax.default_backend()), **kwargs)

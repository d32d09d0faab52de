"""alexnet_jax: the 2012 AlexNet paper in JAX (Krizhevsky, Sutskever, Hinton).

Importing this package needs neither a device mesh nor TensorFlow. The network is a Flax
linen Module, `AlexNet`, whose apply is a pure function over a plain params pytree;
`init_params` and `apply` are functional wrappers over it.
"""

from alexnet_jax.model import (AlexNet, apply, count_params, init_params, model_config,
                               param_shapes)

__all__ = ['AlexNet', 'apply', 'init_params', 'model_config', 'param_shapes', 'count_params',
           'load_params']


def load_params(path):
  """Parameters of the latest checkpoint in a workdir (or of one checkpoint directory)."""
  from alexnet_jax import checkpoints  # Orbax is only needed here.
  return checkpoints.load_params(path)

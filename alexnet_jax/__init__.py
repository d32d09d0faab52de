"""alexnet_jax: the 2012 AlexNet paper in JAX (Krizhevsky, Sutskever, Hinton).

Importing this package needs neither a device mesh nor TensorFlow: the network is pure
functions over a plain params pytree.
"""

from alexnet_jax.model import apply, init_params, model_config, param_shapes, count_params

__all__ = ['apply', 'init_params', 'model_config', 'param_shapes', 'count_params', 'load_params']


def load_params(path):
  """Parameters of the latest checkpoint in a workdir (or of one checkpoint directory)."""
  from alexnet_jax import checkpoints  # Orbax is only needed here.
  return checkpoints.load_params(path)

"""alexnet_jax: the 2012 AlexNet paper in JAX (Krizhevsky, Sutskever, Hinton).

Importing this package needs neither a device mesh nor TensorFlow. The network is a Flax
linen Module, `AlexNet`, whose apply is a pure function over a plain params pytree;
`init_params` and `apply` are functional wrappers over it. For a notebook
(`alexnet_jax.analysis.inspection`, notebooks/inspect.ipynb): `load_run` gives a run's params with
the config they were trained with, `preprocess` / `deprocess` take an image file to the
network's input and back, and `activations` gives every layer from one jitted pass.
"""

from alexnet_jax.analysis.inspection import activations, by_column, deprocess, load_run, preprocess
from alexnet_jax.model import (AlexNet, apply, count_params, init_params, model_config,
                               param_shapes)

__all__ = ['AlexNet', 'apply', 'init_params', 'model_config', 'param_shapes', 'count_params',
           'load_params', 'load_run', 'preprocess', 'deprocess', 'activations', 'by_column']


def load_params(path):
  """Parameters of the latest checkpoint in a workdir (or of one checkpoint directory)."""
  from alexnet_jax.rundir import checkpoints  # Orbax is only needed here.
  return checkpoints.load_params(path)

"""Ablation of the paper config (configs/paper.py, i.e. `alexnet_jax.config.paper_config()`):
one field of the experiment differs."""

from alexnet_jax import config as base


def get_config():
  config = base.paper_config()  # configs/paper.py
  # Sec. 3.2 ablation: one column with half the kernels of conv1-conv4 but the full conv5
  # and fully-connected layers (so the parameter counts stay close): +1.7% top-1 /
  # +1.2% top-5 error against the two columns.
  config.model.columns = 1
  config.mesh.model = 1  # One column cannot be split over devices.
  return config

"""Ablation of the paper config (configs/paper.py, i.e. `alexnet_jax.config.paper_config()`):
one field of the experiment differs."""

from alexnet_jax import config as base


def get_config():
  config = base.paper_config()  # configs/paper.py
  config.model.remove_conv = 'conv4'  # Sec. 7: removing a middle conv layer costs ~2% top-1.
  return config

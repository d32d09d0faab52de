"""Ablation of the paper config (configs/paper.py, i.e. `alexnet_jax.config.paper_config()`):
one field of the experiment differs."""

from alexnet_jax import config as base


def get_config():
  config = base.paper_config()  # configs/paper.py
  config.data.lighting = 'none'  # Sec. 4.1 ablation: without PCA lighting, +1% top-1 error.
  return config

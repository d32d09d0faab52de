"""Ablation of the paper config (configs/paper.py, i.e. `alexnet_jax.config.paper_config()`):
one field of the experiment differs."""

from alexnet_jax import config as base


def get_config():
  config = base.paper_config()  # configs/paper.py
  config.model.lrn = False  # Sec. 3.3 ablation: +1.4% top-1 / +1.2% top-5 error without LRN.
  return config

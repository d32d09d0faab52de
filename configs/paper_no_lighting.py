"""Ablation of the paper config (configs/paper.py): one field of the experiment differs."""

from configs import paper


def get_config():
  config = paper.get_config()
  config.data.lighting = 'none'  # Sec. 4.1 ablation: without PCA lighting, +1% top-1 error.
  return config

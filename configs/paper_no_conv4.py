"""Ablation of the paper config (configs/paper.py): one field of the experiment differs."""

from configs import paper


def get_config():
  config = paper.get_config()
  config.model.remove_conv = 'conv4'  # Sec. 7: removing a middle conv layer costs ~2% top-1.
  return config

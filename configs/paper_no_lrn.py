"""Ablation of the paper config (configs/paper.py): one field of the experiment differs."""

from configs import paper


def get_config():
  config = paper.get_config()
  config.model.lrn = False  # Sec. 3.3 ablation: +1.4% top-1 / +1.2% top-5 error without LRN.
  return config

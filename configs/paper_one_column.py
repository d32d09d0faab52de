"""Ablation of the paper config: one field differs (SPEC.md)."""

from configs import paper


def get_config():
  config = paper.get_config()
  config.model.columns = 1  # Sec. 3.2 ablation: one column with half the conv kernels (full conv5, fc): +1.7% / +1.2%.
  config.mesh.model = 1  # One column cannot be split over devices.
  return config

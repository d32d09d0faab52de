"""The released 2012 run as it ran: the paper config plus the original code's differences.

  python -m alexnet_jax.main --config=configs/original_code.py --workdir=runs/original \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars

"Original code" is the 2012 cuda-convnet configuration of this model (layers-145.cfg /
layer-params-145.cfg). Its notes log 40.66% top-1 / 18.21% top-5 validation
error (`python -m alexnet_jax.analysis.report` shows runs of this config beside those
numbers). Each switch's default is the paper's; README "Switches" lists them all.
"""

import ml_collections

from alexnet_jax import config


def get_config() -> ml_collections.ConfigDict:
  return config.original_code_config()

"""The paper's run: ILSVRC-2012, batch 128, 90 epochs, everything as in Sec. 3-5.

  python -m alexnet_jax.main --config=configs/paper.py --workdir=runs/paper \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars

Expected (Table 2, "1 CNN"): 40.7% top-1 / 18.2% top-5 validation error with the
10-view test. The paper needed 5-6 days on two GTX 580s for ~90 epochs. The fields it
changes from configs/default.py are in `alexnet_jax.config.paper_config`, which
`python -m alexnet_jax.analysis.report` compares runs against.
"""

import ml_collections

from alexnet_jax import config


def get_config() -> ml_collections.ConfigDict:
  return config.paper_config()

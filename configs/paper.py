"""The paper's run: ILSVRC-2012, batch 128, 90 epochs, everything as in Sec. 3-5.

  python -m alexnet_jax.main --config=configs/paper.py --workdir=runs/paper \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars

Expected (SPEC.md, Table 2 "1 CNN"): 40.7% top-1 / 18.2% top-5 validation error with
the 10-view test. The paper needed 5-6 days on two GTX 580s for ~90 epochs.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'imagenet2012'  # Sec. 2 (Table 2 is ILSVRC-2012).
  config.mesh.model = 2  # Sec. 3.2: one column per device (needs 2+ devices; 1 device: --config.mesh.model=1).
  config.batch_size = 128  # Sec. 5.
  config.num_epochs = 90  # Sec. 5.
  config.optim.schedule = 'step'  # Original run's log: /10 at epochs 25, 51, 79 (default.py).
  return config

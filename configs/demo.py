"""The README's main job: the paper's network and pipeline on the offline synthetic
shapes dataset (10 classes, generated on first use; no download), in minutes on 2 CPU cores.

  python -m alexnet_jax.main --config=configs/demo.py --workdir=runs/demo

It shows learning, not the paper's accuracy: the training loss falls and the held-out
top-1 error ends far below chance (90%).
"""

from alexnet_jax import config as base


def get_config():
  config = base.default_config()  # configs/default.py
  config.data.source = 'demo'
  config.model.num_classes = 10  # The demo dataset's ten shapes.
  # N(0, 0.01) (Sec. 5) sits on a flat loss for the first epochs; a minutes-long demo
  # needs the variance-preserving init to learn from its first steps.
  config.model.init = 'he'
  config.data.input_scale = 1 / 60  # Unit-scale inputs, which the 'he' init assumes.
  config.batch_size = 32  # Small batches: many updates in few minutes on a CPU.
  config.num_epochs = 3
  config.data.shuffle_buffer = 4096
  config.mesh.model = 1
  config.log_every_steps = 10
  config.checkpoint_every_steps = 100
  config.eval_batch_size = 50
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (2,)
  return config

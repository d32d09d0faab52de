"""The network's layer table: `python -m alexnet_jax.model.summary --config=configs/paper.py`.

Prints `flax.linen.tabulate`'s table of `AlexNet` for the config's model, one image:
every layer with its input and output shapes, its parameters and its forward FLOPs.
"""

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from alexnet_jax import model


def table(spec: model.Spec, *, batch_size: int = 1, compute_flops: bool = True) -> str:
  """nn.tabulate's table of `AlexNet(spec)` on `batch_size` images."""
  images = jnp.zeros((batch_size, spec.image_size, spec.image_size, 3), jnp.float32)
  tabulate = nn.tabulate(model.AlexNet(spec), jax.random.key(0), compute_flops=compute_flops,
                         # Plain text: a log file or a README shows no colour codes.
                         console_kwargs={'width': 150, 'force_terminal': False,
                                         'color_system': None})
  return tabulate(images)


def main(argv):
  del argv
  spec = model.Spec.from_config(flags.FLAGS.config.model)  # The one parse, at the boundary.
  print(table(spec, batch_size=flags.FLAGS.batch_size))


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
  flags.DEFINE_integer('batch_size', 1, 'Images in the tabulated batch.')
  flags.mark_flags_as_required(['config'])
  app.run(main)

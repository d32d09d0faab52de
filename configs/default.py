"""The one default configuration every other config derives from.

Its fields, each number with the paper's section beside it, are in the package:
`alexnet_jax.config.default_config` (so the library reads the same defaults from any
working directory). Other configs import `get_config` from here and override a few
fields, so a diff between two configs is the experiment.
"""

import ml_collections

from alexnet_jax import config


def get_config() -> ml_collections.ConfigDict:
  return config.default_config()

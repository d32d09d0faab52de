"""The paper's two-column AlexNet (Sec. 3, Fig. 2) as Flax linen modules over a plain params pytree.

  spec     `Spec`: the network's fields, declared once (`model_config()` is its defaults);
           the parameter layout (`param_shapes`) and Sec. 5's initialisation.
  layers   LRN, contrast norm and max-pooling with their hand-written gradients, and the
           per-column Flax modules.
  network  `AlexNet`, and the functional entry points `init_params`, `apply`, `forward`.
  losses   softmax cross-entropy and top-k errors.
  summary  `python -m alexnet_jax.model.summary --config=...`: the layer table.

The names below are the package's: `from alexnet_jax import model; model.apply(...)`.
"""

from alexnet_jax.model.layers import (ColumnConv, ColumnDense, ColumnDropout, ColumnSumDense,
                                      ContrastNorm, LocalResponseNorm, MaxPool, Placement, conv,
                                      contrast_norm, local_response_norm, max_pool)
from alexnet_jax.model.network import (AlexNet, apply, check_layer, forward, init_params,
                                       validate_images, validate_params)
from alexnet_jax.model.spec import (ACTIVATIONS, ACTIVATIONS_COLLECTION, CONV_LAYERS, FC_LAYERS,
                                    LAYERS, Params, Spec, conv1_padding, count_params,
                                    init_scheme, model_config, param_shapes)

__all__ = ['ACTIVATIONS', 'ACTIVATIONS_COLLECTION', 'CONV_LAYERS', 'FC_LAYERS', 'LAYERS', 'AlexNet',
           'ColumnConv', 'ColumnDense', 'ColumnDropout', 'ColumnSumDense', 'ContrastNorm',
           'LocalResponseNorm', 'MaxPool', 'Params', 'Placement', 'Spec', 'apply', 'check_layer',
           'contrast_norm', 'conv', 'conv1_padding', 'count_params', 'forward', 'init_params',
           'init_scheme', 'local_response_norm', 'max_pool', 'model_config', 'param_shapes',
           'validate_images', 'validate_params']

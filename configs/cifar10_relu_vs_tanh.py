"""Fig. 1 (Sec. 3.1): a four-layer CNN on CIFAR-10, ReLU against tanh, no regularisation.

  python -m alexnet_jax.cifar10 --config=configs/cifar10_relu_vs_tanh.py --workdir=runs/fig1

The paper: with ReLUs the net reaches 25% training error six times faster (in epochs)
than with tanh units; the learning rate of each was chosen separately to make its
training as fast as possible. Our network (the paper gives only "four-layer"): conv 5x5x32
-> pool 3/2 -> conv 5x5x32 -> pool 3/2 -> conv 5x5x64 -> pool 3/2 -> fc 10, 'SAME' convs,
'VALID' pools (32 -> 15 -> 7 -> 3), as in cuda-convnet's CIFAR-10 examples. No weight
decay, no dropout, no augmentation. The learning rates below have NOT been tuned here
(no CIFAR-10 on this machine): sweep them, e.g. --config.learning_rate.tanh=0.02, and keep
the fastest of each. Both nets start from the same LeCun-normal init (std 1/sqrt(fan_in)).
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.dataset = 'cifar10'  # TFDS name.
  config.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default.
  config.split = 'train'  # Fig. 1 plots training error.
  config.max_examples = -1  # -1: the whole split (50,000); smaller for smoke runs.
  config.conv_features = (32, 32, 64)
  config.kernel_size = 5
  config.pool_window = 3  # Overlapping pooling, as the paper's nets use.
  config.pool_stride = 2
  config.activations = ('relu', 'tanh')
  config.learning_rate = ml_collections.ConfigDict()
  config.learning_rate.relu = 0.01  # Tuned separately (Sec. 3.1); untuned here, see above.
  config.learning_rate.tanh = 0.01
  config.momentum = 0.9  # As Sec. 5's update rule; no weight decay (no regularisation).
  config.batch_size = 128  # Sec. 5.
  config.num_epochs = 40  # The paper's plot runs to ~35 epochs.
  config.target_error = 0.25  # Fig. 1's dashed line.
  config.seed = 0
  return config

"""The one default configuration every other config derives from.

Every number is the paper's (Krizhevsky, Sutskever, Hinton 2012) unless the comment says
otherwise; the section is given beside it. Other configs import `get_config` from here
and override a few fields, so a diff between two configs is the experiment.
"""

import ml_collections

from alexnet_jax import model


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # The network (Sec. 3); see alexnet_jax.model.model_config for each field.
  config.model = model.model_config()

  # Input pipeline (Sec. 2, 4.1).
  config.data = ml_collections.ConfigDict()
  # 'imagenet2012' | 'imagenette' | 'folder' | 'demo' (synthetic shapes, offline).
  config.data.source = 'imagenet2012'
  config.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data dir; None = TFDS default.
  config.data.manual_dir = ml_collections.FieldReference(None, field_type=str)  # imagenet2012: where the ILSVRC2012 tars are.
  config.data.folder = ml_collections.FieldReference(None, field_type=str)  # 'folder': root with one sub-folder per class.
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.stored_size = 256  # Sec. 2: shorter side to 256, central 256x256 patch.
  config.data.crop_size = config.model.get_ref('image_size')  # Sec. 4.1: random 224x224 patches.
  config.data.flip = True  # Sec. 4.1: horizontal reflections.
  # Sec. 4.1 PCA lighting: 'paper' (a_i ~ N(0, 0.1) on [0, 1] eigenvalues), 'original'
  # (the released code's stronger 0-255 std-dev variant), or 'none'.
  config.data.lighting = 'paper'
  config.data.lighting_std = 0.1  # Sec. 4.1: sigma of a_i.
  # Sec. 2: each crop minus its own window of the per-pixel mean image ('crop'). 'center':
  # every crop and view minus the mean image's central crop, as the original code does.
  config.data.mean_patch = 'crop'
  # Multiplies the centred images. 1 = the paper's raw 0-255 RGB values (Sec. 2); 1/60
  # (about ImageNet's pixel std) gives unit-scale inputs, which short runs with
  # model.init='he' need (later practice, not the paper).
  config.data.input_scale = 1.0
  # Sec. 2 mean image and Sec. 4.1 RGB PCA: 'train_split' computes them from the training
  # split (the paper; one streaming pass the first time a dataset is used, then read from
  # `stats_file`); 'imagenet' uses ImageNet's per-channel mean and PCA constants instead.
  config.data.statistics = 'train_split'
  # None: <data_dir>/alexnet_jax_stats/<dataset>-<train split>.npz, keyed by the dataset.
  config.data.stats_file = ml_collections.FieldReference(None, field_type=str)
  # A random subset this large (None: all): on ImageNet, the per-pixel mean is then within
  # about 0.2 of 255 of the full pass's (README, Data).
  config.data.stats_max_examples = ml_collections.FieldReference(100_000, field_type=int)
  config.data.shuffle_buffer = 16_384
  config.data.skip_bad_files = False  # 'folder': skip unreadable images (counted, logged) instead of failing.
  config.data.prefetch_batches = 2
  # Written by `python -m alexnet_jax.prepare` (256x256 JPEG TFRecords, one folder per split).
  # None: <data_dir>/alexnet_jax_prepared/<dataset>, keyed by the dataset.
  config.data.prepared_dir = ml_collections.FieldReference(None, field_type=str)
  config.data.use_prepared = True  # Read a split's prepared copy when it exists.

  # Parallel layout: a ('data', 'model') device mesh. model = 2 puts one column per
  # device (the paper's two GPUs, Sec. 3.2); model = 1 keeps both columns on a device.
  # data = -1 uses all remaining devices.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1
  # 'shard_map' runs every layout; 'pmap' (jax.pmap over the one axis larger than 1) runs
  # the paper's two columns on 2 devices (data=1, model=2) or pure data parallelism
  # (model=1), not both at once (alexnet_jax.parallel).
  config.mesh.mapper = 'shard_map'

  # Learning (Sec. 5).
  config.batch_size = 128  # Sec. 5: batch size 128 (global, on any layout).
  config.num_epochs = 90  # Sec. 5: "roughly 90 cycles"; the original run stopped at 91.
  config.seed = 0

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.01  # Sec. 5: 0.01 for all layers.
  config.optim.momentum = 0.9  # Sec. 5.
  config.optim.weight_decay = 0.0005  # Sec. 5.
  config.optim.decay_biases = False  # Original code: no weight decay on biases.
  config.optim.bias_lr_multiplier = 1.0  # Paper: one rate for all layers (original code: 2).
  # 'step': divide by 10 at `decay_epochs`; 'plateau': divide by 10 when the validation
  # error stops improving (Sec. 5's heuristic), at most `max_decays` times.
  config.optim.schedule = 'step'
  config.optim.decay_factor = 0.1  # Sec. 5: divided by 10.
  config.optim.decay_epochs = (25, 51, 79)  # The original run's log (SPEC.md, Sec. 5).
  config.optim.max_decays = 3  # Sec. 5: "reduced three times".
  config.optim.plateau_patience = 2  # Evaluations without improvement before a decay.
  config.optim.plateau_min_delta = 0.0  # Improvement in top-1 error that counts.

  # Bookkeeping (not from the paper).
  config.log_every_steps = 50
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.eval_batch_size = 128
  # Sec. 4.1: 'center' (single 224 crop) and 'ten' (corners + centre and reflections).
  config.eval_views = ('center', 'ten')
  # Steps to run before stopping (for smoke runs); -1 = num_epochs worth.
  config.max_steps = -1
  return config

"""The default configuration every run derives from, and the paper's run.

Every number is the paper's (Krizhevsky, Sutskever, Hinton 2012) unless the comment says
otherwise; the section is given beside it. `default_config()` has every field;
`paper_config()` is the paper's ILSVRC-2012 run (Table 2, "1 CNN"). The config files in
the repository's configs/ directory (for `--config=configs/X.py`) start from these and
override a few fields, so a diff between two configs is the experiment. This module is
part of the installed package, so the library (alexnet_jax.report, alexnet_jax.bench)
reads it from any working directory.
"""

import ml_collections

from alexnet_jax import model


def default_config() -> ml_collections.ConfigDict:
  """Every field of a run, each number the paper's unless its comment says otherwise."""
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
  # Where the random crop, reflection, lighting and mean subtraction run: 'host' (tf.data
  # ships float32 crops), 'device' (the host ships uint8 256x256 images; the jitted step
  # augments them), or 'auto': 'device' on GPU/TPU, 'host' on CPU (README, "Augmentation on
  # the device", says why).
  config.data.augment_on = 'auto'
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
  # device (the paper's two GPUs, Sec. 3.2); model = 1 keeps both columns on a device;
  # model = -1 takes what the devices allow: 2 with two or more devices (2 x data of them
  # with an explicit data), else 1 (parallel.Layout.from_config logs which). data = -1
  # uses all remaining devices.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = -1
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
  config.optim.decay_epochs = (25, 51, 79)  # Sec. 5's three drops, at the original run's epochs (README, Training).
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
  # Resuming a workdir whose config.json differs in what is trained (the model, data,
  # optimizer, batch size, schedule, seed) stops with the list of differing fields. This
  # comma-separated list of fields (or sections, e.g. 'batch_size,optim') lets a resume
  # change them on purpose; fields that extend or observe a run (num_epochs, max_steps,
  # logging, evaluation, checkpoint cadence, mesh) may always change (alexnet_jax.rundir).
  config.resume_overrides = ''
  # A finished workdir (its last step trained and evaluated) is left as it is when run
  # again; True evaluates its last checkpoint once more (new rows in metrics.jsonl).
  config.reevaluate = False
  # A workdir on an object store (gs://) is locked by a leased object (alexnet_jax.rundir):
  # a run that dies without releasing it (kill -9, a pre-empted pod) blocks the workdir
  # until its lease runs out, after this many seconds; it is renewed every quarter of it.
  config.lock_lease_s = 120.0
  return config


def paper_config() -> ml_collections.ConfigDict:
  """The paper's run: ILSVRC-2012, batch 128, 90 epochs, everything as in Sec. 3-5.

  Expected (Table 2, "1 CNN"): 40.7% top-1 / 18.2% top-5 validation error with the
  10-view test. The paper needed 5-6 days on two GTX 580s for ~90 epochs.
  """
  config = default_config()
  config.data.source = 'imagenet2012'  # Sec. 2 (Table 2 is ILSVRC-2012).
  # Sec. 3.2: one column per device wherever there are 2+ devices; on one device both
  # columns run there (the same function). --config.mesh.model=2 insists on the split.
  config.mesh.model = -1
  config.batch_size = 128  # Sec. 5.
  config.num_epochs = 90  # Sec. 5.
  config.optim.schedule = 'step'  # Original run's log: /10 at epochs 25, 51, 79 (default_config).
  return config


def original_code_config() -> ml_collections.ConfigDict:
  """The released 2012 run as it ran: the paper config plus the original code's differences.

  "Original code" is the 2012 cuda-convnet configuration of this model (layers-145.cfg /
  layer-params-145.cfg). Its notes log 40.66% top-1 / 18.21% top-5 validation error
  (`alexnet_jax.report` shows runs of this config beside those numbers). Each line below
  is one switch whose default is the paper's; README "Switches" lists them all.
  """
  config = paper_config()
  model = config.model
  # Sec. 3.3 writes alpha * sum; cuda-convnet's cmrnorm divides the layer-params `scale`
  # (1e-4) by the size (5): 2e-5 multiplies the sum. k stays the paper's 2: the
  # released numbers record no difference there. Unverified: cuda-convnet2 makes k a parameter (`minDiv`, 2 in its
  # ImageNet params), and some cuda-convnet versions hard-code 1 in the cross-map kernel.
  model.lrn_alpha_over_n = True
  model.lrn1_before_relu = True  # conv1 -> LRN -> ReLU -> pool (the paper: ReLU first).
  # The extra within-channel 5x5 normalisation after conv2, cuda-convnet's `cnorm` layer
  # (cuda-convnet ContrastNormLayer: x / (1 + scale / size^2 * sum_5x5 (x - local mean)^2)
  # ^ pow). Its scale and pow in layer-params-145 are not recorded here: model.cnorm2_alpha
  # and cnorm2_beta keep their placeholder defaults (0.001, 0.75) until they are known.
  model.cnorm2 = True
  model.init_std_conv345 = 0.03  # Sec. 5 says N(0, 0.01) everywhere; the file: 0.03 for conv3-5.
  # Sec. 5: one learning rate and weight decay for all weights. The original code: biases
  # at twice the weights' rate (epsB = 2 epsW) and without weight decay.
  config.optim.bias_lr_multiplier = 2.0
  config.optim.decay_biases = False
  # Sec. 4.1 lighting with the released code's constants: a_i times the 0-255 standard
  # deviations, and the centred image plus that noise multiplied by 1/1.1 (training only).
  config.data.lighting = 'original'
  # The original code subtracts the mean image's centre 224 patch from every crop, not the
  # crop's own window. Worth a switch although ImageNet's mean image is smooth (the two
  # differ by a few grey levels, most near the borders): it is one line of the pipeline,
  # it changes every training input, and without it this config is not the run it claims.
  config.data.mean_patch = 'center'
  return config


def caffe_bvlc_config() -> ml_collections.ConfigDict:
  """Caffe's reference AlexNet, bvlc_alexnet, switch for switch; also the config that
  evaluates its converted weights (README, "Pretrained weights").

  Expected with the converted weights (Caffe model zoo, ILSVRC-2012 validation, centre
  crop): 57.1% top-1 / 80.2% top-5 accuracy, i.e. 42.9% / 19.8% error. Its grouped layers
  (conv2, conv4, conv5: `group: 2`) are this project's two columns; its layer order is the
  paper's: conv -> ReLU -> LRN -> max-pool for layers 1 and 2 (bvlc_reference_caffenet,
  not this one, pools before normalising). fc8 is one 1000-way layer, as here by default.
  """
  config = paper_config()
  model = config.model
  model.image_size = 227  # A 227 crop and no conv1 padding (also sets data.crop_size).
  # Caffe's LRN layer: k = 1, alpha / local_size times the sum, and a window that runs
  # over all channels of the blob, across the two groups.
  model.lrn_k = 1.0
  model.lrn_alpha_over_n = True
  model.lrn_across_columns = True
  # bvlc_alexnet's train_val.prototxt fillers: std 0.01, fc6/fc7 0.005; biases 0.1 in
  # conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
  model.init = 'caffe'
  # Caffe's dropout scales the kept units by 1 / (1 - p) while training and passes them
  # through at test time: the converted weights need that form.
  model.dropout_form = 'inverted'
  # The solver: batch 256, base_lr 0.01 stepped by 0.1 every 100,000 iterations (20 epochs
  # of 1.28M images) for 450,000 (90 epochs), momentum 0.9, weight_decay 0.0005; biases at
  # lr_mult 2 and decay_mult 0. Caffe's momentum update keeps the rate inside the velocity,
  # as Sec. 5's rule does.
  config.batch_size = 256
  config.optim.decay_epochs = (20, 40, 60, 80)
  config.optim.bias_lr_multiplier = 2.0
  config.optim.decay_biases = False
  # Caffe's data layer: random 227 crops and mirroring, no lighting noise.
  config.data.lighting = 'none'
  # Caffe subtracts its ILSVRC-2012 mean image (about BGR 104, 117, 123 per channel). The
  # per-channel ImageNet mean, RGB (123.68, 116.78, 103.94), is within one level of it and
  # needs no pass over the data; --config.data.statistics=train_split computes the per-pixel
  # mean image of the training split instead, as Caffe's training did.
  config.data.statistics = 'imagenet'
  return config

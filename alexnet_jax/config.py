"""The default configuration every run derives from, and the paper's run.

Every number is the paper's (Krizhevsky, Sutskever, Hinton 2012) unless the comment says
otherwise; the section is given beside it. `default_config()` has every field;
`paper_config()` is the paper's ILSVRC-2012 run (Table 2, "1 CNN"). The config files in
the repository's configs/ directory (for `--config=configs/X.py`) start from these and
override a few fields, so a diff between two configs is the experiment. `RunSpec` is a
config parsed once: each command parses its config at its boundary and passes the specs
down. This module is part of the installed package, so config files and the library
(alexnet_jax.analysis.report, alexnet_jax.bench) read it from any working directory.
"""

import dataclasses

import ml_collections

from alexnet_jax import model, optim, parallel
from alexnet_jax.data import spec as data_spec


def default_config() -> ml_collections.ConfigDict:
  """Every field of a run, each number the paper's unless its comment says otherwise.

  The sections are their owners' specs' defaults, each field declared once there with
  the paper's section beside it: model (`model.Spec`), data (`data.spec.DataSpec`), optim
  (`optim.OptimSpec`), mesh (`parallel.MeshSpec`). The rest, the run's length and
  bookkeeping, is here.
  """
  config = ml_collections.ConfigDict()
  config.model = model.model_config()  # The network (Sec. 3).
  config.data = data_spec.data_config()  # The input pipeline (Sec. 2, 4.1).
  # Sec. 4.1: the crops are the network's input size (227 for Caffe's config).
  config.data.crop_size = config.model.get_ref('image_size')
  config.mesh = parallel.mesh_config()  # The parallel layout (Sec. 3.2).

  # Learning (Sec. 5).
  config.batch_size = 128  # Sec. 5: batch size 128 (global, on any layout).
  config.num_epochs = 90  # Sec. 5: "roughly 90 cycles"; the original run stopped at 91.
  config.seed = 0
  config.optim = optim.optim_config()  # Sec. 5's update rule and schedule.

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
  # logging, evaluation, checkpoint cadence, mesh) may always change (rundir.resume).
  config.resume_overrides = ''
  # A finished workdir (its last step trained and evaluated) is left as it is when run
  # again; True evaluates its last checkpoint once more (new rows in metrics.jsonl).
  config.reevaluate = False
  # A workdir on an object store (gs://) is locked by a leased object (rundir.lock): a
  # run that dies without releasing it (kill -9, a pre-empted pod) blocks the workdir
  # until its lease runs out, after this many seconds; it is renewed every quarter of it.
  config.lock_lease_s = 120.0
  return config


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A run's config parsed and validated once, at a command's boundary (`from_config`).

  Below the boundary everything takes this (or one of its parts) and never the ConfigDict:
  `model`, `data`, `optim` and `mesh` are their owners' frozen specs, and the run's
  length and bookkeeping are the fields below, named as in the config. The config itself
  lives on only as `config_json`, what a run writes (config.json, each checkpoint's meta)
  and what a resume compares.
  """
  model: model.Spec
  data: data_spec.DataSpec
  optim: optim.OptimSpec
  mesh: parallel.MeshSpec
  batch_size: int
  num_epochs: int
  seed: int
  log_every_steps: int
  eval_every_epochs: int
  checkpoint_every_steps: int
  keep_checkpoints: int
  eval_batch_size: int
  eval_views: tuple[str, ...]
  max_steps: int
  resume_overrides: str
  reevaluate: bool
  lock_lease_s: float
  config_json: str = dataclasses.field(default='{}', repr=False, compare=False)

  def __post_init__(self):
    """One-line ValueErrors for settings that cannot work, before anything is written."""
    for field in ('batch_size', 'eval_batch_size', 'num_epochs', 'log_every_steps',
                  'checkpoint_every_steps', 'keep_checkpoints', 'eval_every_epochs'):
      if getattr(self, field) < 1:
        raise ValueError(f'config.{field} must be a positive integer, got {getattr(self, field)}.')
    object.__setattr__(self, 'eval_views', tuple(self.eval_views))
    if set(self.eval_views) - set(data_spec.VIEWS):
      raise ValueError(f'config.eval_views may hold {data_spec.VIEWS}, got {self.eval_views}.')
    if self.max_steps == 0 or self.max_steps < -1:
      raise ValueError(f'config.max_steps must be a positive number of steps, or -1 for '
                       f'config.num_epochs worth; got {self.max_steps}.')
    if not self.lock_lease_s > 0:
      raise ValueError(f'config.lock_lease_s must be a positive number of seconds, got '
                       f'{self.lock_lease_s}.')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'RunSpec':
    """The one parse of a run's config: every section by its owner's spec, checked together."""
    config = config.copy_and_resolve_references()
    run_fields = {f.name for f in dataclasses.fields(cls)} - {
        'model', 'data', 'optim', 'mesh', 'config_json'}
    return cls(model=model.Spec.from_config(config.model),
               data=data_spec.DataSpec.from_config(config.data),
               optim=optim.OptimSpec.from_config(config.optim),
               mesh=parallel.MeshSpec.from_config(config.mesh),
               config_json=config.to_json(),
               **{name: config[name] for name in run_fields})

  def total_steps(self, steps_per_epoch: int) -> int:
    """num_epochs worth of steps, or max_steps where that is fewer."""
    total = self.num_epochs * steps_per_epoch
    return min(total, self.max_steps) if self.max_steps > 0 else total


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
  (`alexnet_jax.analysis.report` shows runs of this config beside those numbers). Each line below
  is one switch whose default is the paper's; docs/original_code_and_caffe.md lists them all.
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
  evaluates its converted weights (docs/original_code_and_caffe.md).

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

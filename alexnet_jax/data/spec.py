"""`DataSpec`: `config.data` declared once (`data_config()` is its defaults), parsed and
validated once.

Every choice that has a fixed set of values is checked here, so a bad value is a one-line
ValueError before anything is read or written (`config.RunSpec.from_config` parses it).
The batch-divisibility check and the steps-per-epoch formula live here too, each written
once.
"""

from __future__ import annotations

import dataclasses

import ml_collections

STATISTICS = ('train_split', 'imagenet')  # Sec. 2 mean image: this split's, or ImageNet's.
# Where each crop's mean comes from: 'crop' = the crop's own window of the mean image (Sec.
# 2's per-pixel mean); 'center' = the mean image's central crop for every crop and view,
# reflections included (the original code).
MEAN_PATCHES = ('crop', 'center')
LIGHTINGS = ('paper', 'original', 'none')  # Sec. 4.1 PCA lighting (augment.lighting_shift).
VIEWS = ('center', 'ten')  # Sec. 4.1's view schemes: the centre crop, and the 10 views.
# Where Sec. 4.1's crop, reflection, lighting and mean subtraction run: on the host
# (tf.data ships float32 crops), on the device (the host ships uint8 stored images), or
# 'auto': the device on GPU and TPU backends, the host on CPU (docs/data.md, "Augmentation on the
# device", says why).
AUGMENT_ON = ('auto', 'host', 'device')
STORE_FORMATS = ('jpeg', 'raw')
# ImageNet's per-channel RGB mean (0-255), the mean of config.data.statistics='imagenet'.
IMAGENET_RGB_MEAN = (123.68, 116.78, 103.94)  # `prepare --format`: JPEG TFRecords, or uint8 .npy arrays.


def _choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f'config.data.{name} must be one of {choices}; got {value!r}.')


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What the data side reads from `config.data` (config.py says what each field means)."""
  # 'imagenet2012' | 'imagenette' | 'folder' | 'demo' (synthetic shapes, offline).
  source: str = 'imagenet2012'
  data_dir: str | None = None  # TFDS data dir (local or gs://); None = TFDS's default.
  manual_dir: str | None = None  # imagenet2012: where the ILSVRC2012 tars are.
  folder: str | None = None  # 'folder': root with one sub-folder per class.
  train_split: str = 'train'
  eval_split: str = 'validation'
  stored_size: int = 256  # Sec. 2: shorter side to 256, central 256x256 patch.
  # Sec. 4.1: random 224x224 patches; in a config, a reference to model.image_size.
  crop_size: int = 224
  flip: bool = True  # Sec. 4.1: horizontal reflections.
  # Sec. 4.1 PCA lighting: 'paper' (a_i ~ N(0, 0.1) on [0, 1] eigenvalues), 'original'
  # (the released code's stronger 0-255 std-dev variant), or 'none'.
  lighting: str = 'paper'
  lighting_std: float = 0.1  # Sec. 4.1: sigma of a_i.
  # Sec. 2: each crop minus its own window of the per-pixel mean image ('crop'). 'center':
  # every crop and view minus the mean image's central crop, as the original code does.
  mean_patch: str = 'crop'
  # Multiplies the centred images. 1 = the paper's raw 0-255 RGB values (Sec. 2); 1/60
  # (about ImageNet's pixel std) gives unit-scale inputs, which short runs with
  # model.init='he' need (later practice, not the paper).
  input_scale: float = 1.0
  # Sec. 2 mean image and Sec. 4.1 RGB PCA: 'train_split' computes them from the training
  # split (the paper; one streaming pass the first time a dataset is used, then read from
  # `stats_file`); 'imagenet' uses ImageNet's per-channel mean and PCA constants instead.
  statistics: str = 'train_split'
  # None: <data_dir>/alexnet_jax_stats/<dataset>-<train split>.npz, keyed by the dataset.
  stats_file: str | None = None
  # A random subset this large (None: all): on ImageNet, the per-pixel mean is then within
  # about 0.2 of 255 of the full pass's (docs/data.md).
  stats_max_examples: int | None = 100_000
  shuffle_buffer: int = 16_384
  skip_bad_files: bool = False  # 'folder': skip unreadable images (counted, logged) instead of failing.
  prefetch_batches: int = 2
  # Written by `python -m alexnet_jax.data.prepare` (256x256 JPEG TFRecords, one folder per
  # split). None: <data_dir>/alexnet_jax_prepared/<dataset>, keyed by the dataset.
  prepared_dir: str | None = None
  use_prepared: bool = True  # Read a split's prepared copy when it exists.
  # Where the random crop, reflection, lighting and mean subtraction run: 'host' (tf.data
  # ships float32 crops), 'device' (the host ships uint8 256x256 images; the jitted step
  # augments them), or 'auto': 'device' on GPU/TPU, 'host' on CPU (docs/data.md says why).
  augment_on: str = 'auto'

  def __post_init__(self):
    _choice('statistics', self.statistics, STATISTICS)
    _choice('mean_patch', self.mean_patch, MEAN_PATCHES)
    _choice('lighting', self.lighting, LIGHTINGS)
    _choice('augment_on', self.augment_on, AUGMENT_ON)
    if self.crop_size > self.stored_size:
      # Sec. 2 stores 256x256 images and Sec. 4.1 crops 224x224 patches out of them.
      raise ValueError(f'config.data.stored_size {self.stored_size} is smaller than the '
                       f'{self.crop_size}x{self.crop_size} crops (config.model.image_size): set '
                       f'--config.data.stored_size to at least {self.crop_size} (the paper: 256).')
    if self.crop_size < 1:
      raise ValueError(f'config.data.crop_size must be positive; got {self.crop_size}.')
    if not self.lighting_std >= 0:  # NaN too.
      raise ValueError(f'config.data.lighting_std must be >= 0 (the paper: 0.1); got '
                       f'{self.lighting_std}.')

  @classmethod
  def from_config(cls, data_cfg) -> 'DataSpec':
    """From a `config.data` ConfigDict (or a mapping); missing fields take the defaults."""
    if isinstance(data_cfg, cls):
      return data_cfg
    get = data_cfg.get
    # Fields this spec does not know are other modules' business and are left alone.
    return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

  @property
  def augment_on_device(self) -> bool:
    """Whether the step augments; 'auto' not yet `for_backend`-resolved means the host."""
    return self.augment_on == 'device'

  def for_backend(self, backend: str) -> 'DataSpec':
    """'auto' made 'device' on a GPU or TPU backend (`jax.default_backend()`), else 'host'.

    The host's measured cost per image (docs/data.md) is what an accelerator step outruns; a CPU
    step is 30x slower than either host feed, and keeps its synthetic-input program.
    """
    if self.augment_on != 'auto':
      return self
    return dataclasses.replace(self, augment_on='host' if backend == 'cpu' else 'device')


def data_config() -> ml_collections.ConfigDict:
  """`config.data`: `DataSpec`'s defaults as a ConfigDict. A field that may be None is a
  typed FieldReference, so that `--config.data.data_dir=gs://...` (or `=None`) is accepted."""
  optional = {'str | None': str, 'int | None': int}
  cfg = ml_collections.ConfigDict()
  for f in dataclasses.fields(DataSpec):
    cfg[f.name] = (ml_collections.FieldReference(f.default, field_type=optional[f.type])
                   if f.type in optional else f.default)
  return cfg


def check_views(views: str) -> None:
  if views not in VIEWS:
    raise ValueError(f'views must be one of {VIEWS}; got {views!r}.')


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """Each process's share of a global batch; the global batch must divide evenly."""
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by '
                     f'process_count {process_count}.')
  return global_batch_size // process_count


def steps_per_epoch(num_train: int, global_batch_size: int) -> int:
  """Whole batches per epoch: the last partial batch of an epoch is dropped."""
  return num_train // global_batch_size

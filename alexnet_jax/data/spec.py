"""`DataSpec`: `config.data` parsed once, validated once, with its defaults.

Every choice that has a fixed set of values is checked here, so a bad value is a one-line
ValueError before anything is read or written (`preflight.check_config` calls
`DataSpec.from_config`). The batch-divisibility check and the steps-per-epoch formula live
here too, each written once.
"""

from __future__ import annotations

import dataclasses

STATISTICS = ('train_split', 'imagenet')  # Sec. 2 mean image: this split's, or ImageNet's.
# Where each crop's mean comes from: 'crop' = the crop's own window of the mean image (Sec.
# 2's per-pixel mean); 'center' = the mean image's central crop for every crop and view,
# reflections included (the original code).
MEAN_PATCHES = ('crop', 'center')
LIGHTINGS = ('paper', 'original', 'none')  # Sec. 4.1 PCA lighting (augment.lighting_shift).
VIEWS = ('center', 'ten')  # Sec. 4.1's view schemes: the centre crop, and the 10 views.
# Where Sec. 4.1's crop, reflection, lighting and mean subtraction run: on the host
# (tf.data ships float32 crops), on the device (the host ships uint8 stored images), or
# 'auto': the device on GPU and TPU backends, the host on CPU (README, "Augmentation on the
# device", says why).
AUGMENT_ON = ('auto', 'host', 'device')
STORE_FORMATS = ('jpeg', 'raw')  # `prepare --format`: JPEG TFRecords, or uint8 .npy arrays.


def _choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f'config.data.{name} must be one of {choices}; got {value!r}.')


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What the data side reads from `config.data` (config.py says what each field means)."""
  source: str = 'imagenet2012'
  data_dir: str | None = None
  manual_dir: str | None = None
  folder: str | None = None
  train_split: str = 'train'
  eval_split: str = 'validation'
  stored_size: int = 256
  crop_size: int = 224
  flip: bool = True
  lighting: str = 'paper'
  lighting_std: float = 0.1
  mean_patch: str = 'crop'
  input_scale: float = 1.0
  statistics: str = 'train_split'
  stats_file: str | None = None
  stats_max_examples: int | None = 100_000
  shuffle_buffer: int = 16_384
  skip_bad_files: bool = False
  prefetch_batches: int = 2
  prepared_dir: str | None = None
  use_prepared: bool = True
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

    The host's measured cost per image (README) is what an accelerator step outruns; a CPU
    step is 30x slower than either host feed, and keeps its synthetic-input program.
    """
    if self.augment_on != 'auto':
      return self
    return dataclasses.replace(self, augment_on='host' if backend == 'cpu' else 'device')


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

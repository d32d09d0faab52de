"""The network's fields, declared once (`Spec`), and the parameter layout they give.

`model_config()` is `Spec`'s defaults as a ConfigDict; `Spec.from_config` is the validated,
hashable view of such a config that `jit` takes as a static argument. `param_shapes` is the
documented parameters pytree and `init_scheme` Sec. 5's initialisation of each layer.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

Params = dict[str, dict[str, jax.Array]]

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7', 'fc8')
LAYERS = CONV_LAYERS + FC_LAYERS
# Activations `apply(..., layer=...)` can return, in network order.
# 'cnorm2' exists only with model.cnorm2 (the original code's extra normalisation).
ACTIVATIONS = ('conv1', 'lrn1', 'pool1', 'conv2', 'cnorm2', 'lrn2', 'pool2', 'conv3', 'conv4',
               'conv5', 'pool5', 'fc6', 'fc7', 'fc8')
# The Flax collection where `AlexNet` records every layer's activations when it is mutable.
ACTIVATIONS_COLLECTION = 'activations'


def _choice(name: str, value, allowed, shown: str | None = None) -> None:
  if value not in allowed:
    names = [repr(a) if isinstance(a, str) else str(a) for a in allowed]
    shown = shown or ', '.join(names[:-1]) + ' or ' + names[-1]
    raise ValueError(f'model.{name} must be {shown}, got {value!r}.')


@dataclasses.dataclass(frozen=True)
class Spec:
  """The model's fields, declared once: `model_config()` is this dataclass's defaults as a
  ConfigDict, and a Spec is the validated, hashable view of such a config that `jit` takes
  as a static argument and `AlexNet` reads. The defaults are the paper's (section beside each)."""
  num_classes: int = 1000  # Sec. 2: ILSVRC's 1000 classes.
  columns: int = 2  # Sec. 3.2: two columns ("GPUs"); 1 = the one-column ablation.
  # Sec. 3.5: 224x224x3 input. 227 is Caffe's choice (no padding needed for 55x55).
  image_size: int = 224
  # Sec. 3.5 / Fig. 2: kernels of the whole layer (both columns together).
  conv_features: tuple[int, ...] = (96, 256, 384, 384, 256)
  fc_features: tuple[int, ...] = (4096, 4096)  # fc6, fc7 (fc8 has num_classes).
  activation: str = 'relu'  # Sec. 3.1: ReLU; 'tanh' for Fig. 1's comparison.
  # Sec. 7: "removing any of the middle convolutional layers results in a loss of about
  # 2% for the top-1 performance". '' keeps all; 'conv3', 'conv4' or 'conv5' removes one
  # (the next layer then reads what the removed one read).
  remove_conv: str = ''
  # Sec. 3.3 local response normalisation, within a column's channels.
  lrn: bool = True
  lrn_k: float = 2.0  # Sec. 3.3: k = 2 (Caffe's bvlc_alexnet: 1).
  lrn_n: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  # Sec. 3.3 multiplies the sum of squares by alpha. The original code (cuda-convnet's
  # cmrnorm divides its `scale` by the size) and Caffe divide alpha by n: True gives
  # alpha / n, 2e-5 with alpha = 1e-4 and n = 5, the value those runs actually used.
  lrn_alpha_over_n: bool = False
  # Sec. 3.3: LRN works within a column (the original code never crosses
  # columns). True: the window runs over both columns' channels, as Caffe's bvlc_alexnet
  # does (its LRN layer does not know about groups), at the cost of gathering both
  # columns before lrn1 and lrn2.
  lrn_across_columns: bool = False
  # Sec. 3.3 order for layer 1: conv -> ReLU -> LRN -> pool. The original code normalises
  # conv1 before its ReLU: conv -> LRN -> ReLU -> pool.
  lrn1_before_relu: bool = False
  # Not in the paper: the original code's extra within-channel contrast normalisation after
  # conv2 (cuda-convnet's `cnorm` layer), applied after conv2's ReLU, before lrn2 (the
  # released notes say only "after conv2": its place relative to lrn2 is this project's reading):
  #   b = a / (1 + alpha / size^2 * sum_{size x size window} (a - m)^2)^beta,
  # m the mean of a over the size x size window around each position (zero beyond the
  # edges, divided by size^2), all within one channel. Its scale and power in the 2012
  # layer-params file are not known here: the defaults below are cuda-convnet's documented
  # example scale (0.001) with the LRN's power, a guess to replace when the file is known.
  cnorm2: bool = False
  cnorm2_size: int = 5
  cnorm2_alpha: float = 1e-3
  cnorm2_beta: float = 0.75
  # Sec. 3.4 overlapping pooling: z = 3, s = 2 (z = 2 is the non-overlapping ablation).
  pool_window: int = 3
  pool_stride: int = 2
  # Sec. 4.2 dropout on fc6 and fc7 outputs. 'paper': no rescale while training, outputs
  # times (1 - rate) at test; 'inverted': divide by (1 - rate) while training.
  dropout_rate: float = 0.5
  dropout_form: str = 'paper'
  # Sec. 5 init: 'paper' = N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7;
  # 'caffe' = bvlc_alexnet's fallback (fc6/fc7 std 0.005, those biases 0.1);
  # 'he' = variance-preserving (not the paper's): learns from the first steps, for short
  # demo runs where N(0, 0.01) would sit on the flat start for epochs.
  init: str = 'paper'
  init_std: float = 0.01  # Sec. 5: N(0, 0.01); conv3-conv5 use init_std_conv345.
  # Sec. 5: 0.01 for every layer. The original code draws conv3-conv5 with std 0.03.
  # Used by the 'paper' and 'caffe' schemes ('he' sets its own).
  init_std_conv345: float = 0.01
  # Compute dtype of activations and matmuls ('float32' or 'bfloat16'); params stay float32.
  dtype: str = 'float32'

  def __post_init__(self):
    # Config values arrive as lists, ints for floats and so on: one canonical, hashable form.
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      kind = type(f.default)
      value = tuple(int(v) for v in value) if kind is tuple else kind(value)
      object.__setattr__(self, f.name, value)
    _choice('columns', self.columns, (1, 2))
    _choice('image_size', self.image_size, (224, 227), '224 (padded conv1) or 227')
    _choice('activation', self.activation, ('relu', 'tanh'))
    _choice('dropout_form', self.dropout_form, ('paper', 'inverted'))
    _choice('init', self.init, ('paper', 'caffe', 'he'))
    _choice('remove_conv', self.remove_conv, ('', 'conv3', 'conv4', 'conv5'))
    _choice('dtype', self.dtype, ('float32', 'bfloat16'))
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'model.dropout_rate must be in [0, 1), got {self.dropout_rate}.')
    if self.pool_window < 1 or self.pool_stride < 1:
      raise ValueError('model.pool_window and model.pool_stride must be positive.')
    if self.lrn_n < 1 or self.lrn_n % 2 == 0:
      raise ValueError(f'model.lrn_n must be odd and positive, got {self.lrn_n}.')
    if self.cnorm2_size < 1:
      raise ValueError(f'model.cnorm2_size must be positive, got {self.cnorm2_size}.')
    if len(self.conv_features) != 5 or len(self.fc_features) != 2:
      raise ValueError('model.conv_features needs 5 entries and model.fc_features 2.')
    if self.columns == 2 and any(f % 2 for f in self.conv_features + self.fc_features):
      raise ValueError('With two columns every layer width must be even (half per column).')

  @property
  def lrn_scale(self) -> float:
    """What multiplies LRN's sum of squares: alpha (Sec. 3.3) or alpha / n."""
    return self.lrn_alpha / self.lrn_n if self.lrn_alpha_over_n else self.lrn_alpha

  @property
  def conv_widths(self) -> tuple[int, ...]:
    """Kernels per column, conv1..conv5."""
    if self.columns == 2:
      return tuple(f // 2 for f in self.conv_features)
    # Sec. 3.2's comparison: the one-column net has half the kernels in conv1-conv4 but the
    # full conv5 and fully-connected layers, so that parameter counts stay close.
    return tuple(f // 2 for f in self.conv_features[:4]) + (self.conv_features[4],)

  @property
  def fc_widths(self) -> tuple[int, ...]:
    """Neurons per column, fc6 and fc7."""
    return tuple(f // 2 for f in self.fc_features) if self.columns == 2 else self.fc_features

  @property
  def layers(self) -> tuple[str, ...]:
    """The learned layers of this network, in order."""
    return tuple(name for name in LAYERS if name != self.remove_conv)

  @classmethod
  def from_config(cls, cfg) -> 'Spec':
    """The Spec of a model ConfigDict (or of a Spec); missing fields take the defaults."""
    if isinstance(cfg, Spec):
      return cfg
    return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})


def model_config() -> ml_collections.ConfigDict:
  """The paper's network as a ConfigDict; each field can be switched for an ablation."""
  return ml_collections.ConfigDict(dataclasses.asdict(Spec()))


# ---------------------------------------------------------------------------------------
# Parameters


def conv1_padding(image_size: int) -> tuple[int, int]:
  """Zero padding (before, after) that makes conv1's output 55x55 (Sec. 3.5, Fig. 2).

  The original code computes 1 + ceil((224 - 11) / 4) = 55 output positions, which is
  zero padding of 0 before and 3 after; a 227 input needs none.
  """
  return (0, (55 - 1) * 4 + 11 - image_size)


def param_shapes(cfg) -> dict[str, dict[str, tuple[int, ...]]]:
  """The documented parameter layout: a leading column axis on column layers.

  Where a layer reads both columns (conv3, fc6, fc7, fc8) its input axis holds column
  0's channels first, then column 1's.
  """
  s = Spec.from_config(cfg)
  c = s.columns
  w1, w2, w3, w4, w5 = s.conv_widths
  f6, f7 = s.fc_widths
  kernels = {'conv1': (c, 11, 11, 3, w1), 'conv2': (c, 5, 5, w1, w2)}
  reads = c * w2  # The first of conv3-conv5 reads both columns' pool2 maps.
  for name, width in (('conv3', w3), ('conv4', w4), ('conv5', w5)):
    if name != s.remove_conv:
      kernels[name] = (c, 3, 3, reads, width)
      reads = width  # The next reads only its own column.
  kernels.update({
      'fc6': (c, 6 * 6 * c * reads, f6),  # Reads both columns' 6x6 pool5 maps, flattened (H, W, C).
      'fc7': (c, c * f6, f7),  # Reads both columns.
      'fc8': (c * f7, s.num_classes),  # One layer reading both halves of fc7 (original code).
  })
  return {name: {'kernel': k, 'bias': k[:1] + k[-1:] if name != 'fc8' else k[-1:]}
          for name, k in kernels.items()}


def count_params(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


_ONE_BIASES = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')


def init_scheme(spec: Spec, name: str, kernel_shape: tuple[int, ...]) -> tuple[float, float]:
  """(weight std, bias value) of a layer: Sec. 5, weights N(0, 0.01), biases 1 in conv2,
  conv4, conv5, fc6, fc7 and 0 elsewhere.

  "This initialization accelerates the early stages of learning by providing the ReLUs
  with positive inputs." The 'caffe' scheme is bvlc_alexnet's fallback for runs where
  biases of 1 leave the loss flat: std 0.005 in fc6/fc7 and those biases 0.1.
  """
  std, bias = spec.init_std, (1.0 if name in _ONE_BIASES else 0.0)
  if name in ('conv3', 'conv4', 'conv5'):
    std = spec.init_std_conv345  # Sec. 5: 0.01; the original code: 0.03.
  if spec.init == 'caffe' and name in _ONE_BIASES:
    bias = 0.1
    std = 0.005 if name in ('fc6', 'fc7') else std
  elif spec.init == 'he':
    # Variance-preserving through ReLUs (std sqrt(2 / fan_in); fc8 sqrt(1 / fan_in)),
    # so a short run learns from its first steps. It assumes unit-scale inputs
    # (config.data.input_scale = 1/60): with raw 0-255 values conv1's gradients are
    # ~60x its weights' scale and the first steps diverge.
    fan_in = int(np.prod(kernel_shape[-4:-1] if name.startswith('conv') else kernel_shape[-2]))
    std, bias = float(np.sqrt((1.0 if name == 'fc8' else 2.0) / fan_in)), 0.0
  return std, bias

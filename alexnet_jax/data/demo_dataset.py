"""The offline synthetic demo dataset: ten flat shapes on textured backgrounds (TFDS builder).

It exists so the whole training loop can be run and shown to learn without ImageNet or a
network. The images are *synthetic*: each 256x256 image holds one procedurally drawn shape of
random colour, size and position on a random smooth texture. Every shape is symmetric about
its own vertical axis and lies inside the central 33..223 px, so a horizontal reflection or
any 224 (or 227) crop of Sec. 4.1 keeps the class recognisable; the colour noise of PCA
lighting does not change a shape either. Generation is deterministic (numpy seeds from
split and index), takes ~15 s on one core, and happens once: TFDS caches the result under
`config.data.data_dir` (TFDS default if None).
"""

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

SHAPES = ('circle', 'square', 'triangle_up', 'triangle_down', 'ring', 'plus', 'x_cross',
          'diamond', 'star', 'two_bars')
IMAGE_SIZE = 256
# Every 224 crop of the 256 image contains [32, 224): shapes stay inside it.
_SAFE_LO, _SAFE_HI = 34, 222
MIN_RADIUS, MAX_RADIUS = 45, 80  # Half-sizes of the shapes in pixels.
_SPLITS = {'train': (0, 220), 'validation': (1, 50)}  # split: (seed stream, images per class)


def _background(rng: np.random.Generator) -> np.ndarray:
  """A smooth random colour field plus fine grain, float [256, 256, 3] in 0-255.

  The texture is kept low in contrast (about +-30 around one base colour) so that a
  network trained for a few minutes finds the shape rather than the texture.
  """
  coarse = rng.uniform(0, 255, size=(rng.integers(2, 9), rng.integers(2, 9), 3))
  smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(
      (IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), np.float32)
  base = rng.uniform(40, 215, size=3).astype(np.float32)
  field = base + 0.25 * (smooth - 127.5)
  return field + 8 * rng.standard_normal(field.shape, dtype=np.float32)


def _polygon(cx, cy, r, angles_deg, radii=None):
  radii = np.ones(len(angles_deg)) if radii is None else radii
  a = np.deg2rad(np.asarray(angles_deg, np.float64))
  return [(cx + r * k * np.sin(t), cy - r * k * np.cos(t)) for t, k in zip(a, radii)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
               colour: tuple[int, int, int]) -> None:
  """Draws `shape` of half-size r centred at (cx, cy); all shapes are flip-symmetric."""
  box = [cx - r, cy - r, cx + r, cy + r]
  w = max(4, r / 3)  # Stroke width of bars and rings.
  if shape == 'circle':
    draw.ellipse(box, fill=colour)
  elif shape == 'square':
    draw.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=colour)
  elif shape == 'triangle_up':
    draw.polygon(_polygon(cx, cy, r, [0, 120, 240]), fill=colour)
  elif shape == 'triangle_down':
    draw.polygon(_polygon(cx, cy, r, [60, 180, 300]), fill=colour)
  elif shape == 'ring':
    draw.ellipse(box, outline=colour, width=int(w))
  elif shape == 'plus':
    draw.rectangle([cx - w / 2, cy - r, cx + w / 2, cy + r], fill=colour)
    draw.rectangle([cx - r, cy - w / 2, cx + r, cy + w / 2], fill=colour)
  elif shape == 'x_cross':
    d = r * 0.75
    draw.line([cx - d, cy - d, cx + d, cy + d], fill=colour, width=int(w))
    draw.line([cx - d, cy + d, cx + d, cy - d], fill=colour, width=int(w))
  elif shape == 'diamond':
    draw.polygon(_polygon(cx, cy, r, [0, 90, 180, 270], [1, 0.6, 1, 0.6]), fill=colour)
  elif shape == 'star':
    draw.polygon(_polygon(cx, cy, r, np.arange(10) * 36, [1, 0.4] * 5), fill=colour)
  elif shape == 'two_bars':
    for dy in (-0.5 * r, 0.5 * r):
      draw.rectangle([cx - r, cy + dy - w / 2, cx + r, cy + dy + w / 2], fill=colour)
  else:
    raise ValueError(f'Unknown shape {shape!r}.')


def make_image(rng: np.random.Generator, label: int) -> np.ndarray:
  """One uint8 [256, 256, 3] image of class `label`."""
  canvas = _background(rng)
  r = rng.uniform(MIN_RADIUS, MAX_RADIUS)
  cx, cy = rng.uniform(_SAFE_LO + r, _SAFE_HI - r, size=2)
  # A colour far from the background keeps the shape visible under colour noise.
  local = canvas[int(cy), int(cx)]
  colour = rng.uniform(0, 255, size=3)
  if np.abs(colour - local).sum() < 250:
    colour = np.where(local > 127.5, local - 110, local + 110)
  mask = Image.new('L', (IMAGE_SIZE, IMAGE_SIZE), 0)
  draw_shape(ImageDraw.Draw(mask), SHAPES[label], cx, cy, r, 255)
  alpha = np.asarray(mask, np.float32)[..., None] / 255.0
  colour = np.clip(colour + rng.normal(0, 6, size=3), 0, 255).astype(np.float32)
  image = canvas + (colour - canvas) * alpha
  return np.clip(image + 0.5, 0, 255).astype(np.uint8)


class DemoShapes(tfds.core.GeneratorBasedBuilder):
  """Ten synthetic shape classes; 220 train and 50 validation images per class."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First version.',
                   '1.1.0': 'Calmer backgrounds and larger shapes: learnable in minutes.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Synthetic shapes (alexnet_jax offline demo); not real photographs.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=list(SHAPES)),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in _SPLITS}

  def _generate_examples(self, split):
    stream, per_class = _SPLITS[split]
    for i in range(per_class * len(SHAPES)):
      label = i % len(SHAPES)
      rng = np.random.default_rng([stream, i])
      yield i, {'image': make_image(rng, label), 'label': label}

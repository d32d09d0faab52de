"""data.decode's DCT-scaled JPEG decode: which scale it picks, against a hand-made table,
and what it decodes, against NumPy box means of libjpeg's full-size decode and PIL."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from alexnet_jax.data import decode

SIZE = 32  # The stored size in these tests: 2 x SIZE is the first shorter side scaled.


def _smooth(h, w, channels=3, seed=0):
  """A photograph-like image: a gradient plus low-frequency waves, uint8."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  planes = [128 + 60 * np.sin(2 * np.pi * (a * x + b * y)) + 40 * (x - y)
            for a, b in rng.uniform(0.5, 3, size=(channels, 2))]
  return np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)


def _encode(image, fmt='JPEG'):
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
      buf, fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
  return tf.constant(buf.getvalue())


@pytest.mark.parametrize('h,w,scale', [
    (63, 90, 1),     # Shorter side under 2 x SIZE: full size.
    (64, 90, 2),     # Exactly 2 x SIZE: half.
    (127, 130, 2),   # 127 // 4 = 31 < SIZE: still half.
    (130, 128, 4),
    (256, 300, 8),
    (700, 600, 8),   # 1/8 is libjpeg's smallest scale.
])
def test_the_smallest_scale_that_keeps_the_shorter_side_at_least_the_stored_size(h, w, scale):
  image = decode.decode_at_least(_encode(_smooth(h, w)), SIZE).numpy()
  # libjpeg rounds a scaled dimension up.
  assert image.shape == (-(-h // scale), -(-w // scale), 3)
  assert min(image.shape[:2]) >= SIZE


@pytest.mark.parametrize('scale,h,w', [(2, 96, 128), (4, 160, 128), (8, 256, 320)])
def test_a_scaled_decode_is_the_box_mean_of_the_full_decode(scale, h, w):
  encoded = _encode(_smooth(h, w, seed=scale))
  full = decode.decode(encoded).numpy().astype(np.float64)
  scaled = decode.decode_at_least(encoded, SIZE).numpy().astype(np.float64)
  boxes = full.reshape(h // scale, scale, w // scale, scale, 3).mean(axis=(1, 3))
  assert scaled.shape == boxes.shape
  # libjpeg's scaled inverse DCT is a low-pass of the same coefficients, not a box filter:
  # on smooth content they agree to about a grey level, far from a wrong scale or offset.
  # Measured: 0.9-1.1 on average, at most 5.3 (its chroma is upsampled differently too).
  assert np.abs(scaled - boxes).mean() < 1.5 and np.abs(scaled - boxes).max() < 8


def test_grayscale_is_scaled_to_three_equal_channels_and_png_is_never_scaled():
  gray = decode.decode_at_least(_encode(_smooth(128, 128, channels=1)), SIZE).numpy()
  assert gray.shape == (32, 32, 3)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  pixels = _smooth(128, 160)
  png = decode.decode_at_least(_encode(pixels, 'PNG'), SIZE).numpy()
  np.testing.assert_array_equal(png, pixels)  # Lossless, full size: PIL's pixels exactly.


def test_the_stored_image_moves_by_about_a_grey_level():
  encoded = _encode(_smooth(200, 260, seed=3))
  full = decode.to_uint8(decode.resize_and_center_crop(
      tf.ensure_shape(decode.decode(encoded), [None, None, 3]), SIZE)).numpy()
  stored = decode.decode_stored_uint8(encoded, SIZE).numpy()
  assert stored.shape == full.shape == (SIZE, SIZE, 3)
  diff = np.abs(stored.astype(int) - full.astype(int))
  assert diff.mean() < 1.5 and diff.max() < 10

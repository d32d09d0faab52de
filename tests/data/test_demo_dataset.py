"""Tests of the synthetic demo dataset's images (without generating the whole dataset)."""

import numpy as np
from PIL import Image, ImageDraw

from alexnet_jax.data import demo_dataset


def _mask(shape, cx, cy, r):
  mask = Image.new('L', (256, 256), 0)
  demo_dataset.draw_shape(ImageDraw.Draw(mask), shape, cx, cy, r, 255)
  return np.asarray(mask) > 127


def test_shapes_survive_reflection_and_every_crop():
  # The largest shape at the extreme allowed centres: inside [32, 224), which every 224 crop
  # of the 256 image contains; and its own mirror image about the shape's vertical axis.
  lo, hi, r = demo_dataset._SAFE_LO, demo_dataset._SAFE_HI, demo_dataset.MAX_RADIUS
  for shape in demo_dataset.SHAPES:
    for cx, cy in [(lo + r, lo + r), (hi - r, hi - r)]:
      mask = _mask(shape, cx, cy, r)
      ys, xs = np.nonzero(mask)
      assert ys.min() >= 32 and xs.min() >= 32 and ys.max() < 224 and xs.max() < 224, shape
    mask = _mask(shape, 128, 128, r)  # Centred: the mirror axis is the image's middle.
    mirrored = mask[:, ::-1]
    iou = (mask & np.roll(mirrored, 1, axis=1)).sum() / (mask | np.roll(mirrored, 1,
                                                                       axis=1)).sum()
    iou = max(iou, (mask & mirrored).sum() / (mask | mirrored).sum())
    assert iou > 0.95, shape


def test_classes_are_distinct_shapes():
  masks = np.stack([_mask(s, 128, 128, 50) for s in demo_dataset.SHAPES]).reshape(10, -1)
  inter = masks.astype(float) @ masks.T.astype(float)
  area = masks.sum(1)
  iou = inter / (area[:, None] + area[None, :] - inter)
  np.fill_diagonal(iou, 0)
  assert iou.max() < 0.8


def test_images_are_deterministic_and_show_the_shape():
  a = demo_dataset.make_image(np.random.default_rng([0, 7]), 7)
  b = demo_dataset.make_image(np.random.default_rng([0, 7]), 7)
  c = demo_dataset.make_image(np.random.default_rng([0, 8]), 7)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (256, 256, 3) and a.dtype == np.uint8
  assert not np.array_equal(a, c)

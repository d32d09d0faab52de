"""The generator of `python -m alexnet_jax.bench.imagenet_build`: the bundled ILSVRC-2012
names (synsets, validation labels, the files TFDS re-encodes) and JPEGs of ILSVRC's size.
What TFDS's imagenet2012 builder makes of its tars: tests/data/test_build.py."""

import io

import numpy as np
from PIL import Image

from alexnet_jax.bench import imagenet_build


def test_bundled_names():
  synsets = imagenet_build.synsets()
  assert len(synsets) == 1000 and len(set(synsets)) == 1000
  assert synsets[0] == 'n01440764'
  labels = imagenet_build.validation_labels()
  assert len(labels) == 50_000 and set(labels) == set(synsets)
  assert labels[0] == 'n01751748'  # ILSVRC2012_val_00000001.JPEG, a sea snake.
  assert imagenet_build.val_name(1) == 'ILSVRC2012_val_00000001.JPEG'
  special = imagenet_build.special_files()
  assert special['n02105855_2933.JPEG'] == 'png'
  assert sum(kind == 'cmyk' for kind in special.values()) == 22


def test_photo_jpegs_calibrate_to_ilsvrc_size():
  gen = imagenet_build.PhotoJpegs(seed=3)
  gen.calibrate(110 * 1024, 500, 375, samples=8)
  rng = np.random.default_rng(7)
  sizes = [len(gen.jpeg(rng, 500, 375)) for _ in range(12)]
  assert 90 * 1024 < np.mean(sizes) < 130 * 1024, np.mean(sizes)
  image = Image.open(io.BytesIO(gen.jpeg(rng, 500, 375)))
  assert (image.format, image.mode, image.size) == ('JPEG', 'RGB', (500, 375))

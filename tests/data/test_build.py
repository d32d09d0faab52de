"""`python -m alexnet_jax.data.build --config=configs/paper.py` on tiny fake ILSVRC-2012 tars.

The real TFDS imagenet2012 builder (not tfds.testing.mock_data) reads tars written by the
generator of `python -m alexnet_jax.bench.imagenet_build`: 1000 per-class tars of one
64x48 JPEG each, named by TFDS's own synsets (with the CMYK JPEGs and the PNG that TFDS
re-encodes by name), and 20 validation images under their real names, in shuffled order.
"""

import os
import pathlib
import subprocess
import sys
import tarfile

import tensorflow as tf
import tensorflow_datasets as tfds
# Imported here, not first inside a test while other tests' threads may run.
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder  # noqa: F401

from alexnet_jax.bench import imagenet_build

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_build_imagenet2012_from_tars(tmp_path):
  manual_dir, data_dir = tmp_path / 'manual', tmp_path / 'data'
  gen = imagenet_build.write_tars(str(manual_dir), 1, 20, width=64, height=48,
                                  vary_shape=False, target_kib=None, seed=0)
  assert gen['num_train'] == 1000 and gen['re_encoded_files'] == {'cmyk': 22, 'png': 1}
  synsets = imagenet_build.synsets()
  with tarfile.open(manual_dir / imagenet_build.TRAIN_TAR) as tar:
    assert tar.getnames() == [f'{s}.tar' for s in synsets]
  with tarfile.open(manual_dir / imagenet_build.VAL_TAR) as tar:
    val_names = tar.getnames()
  assert sorted(val_names) == [imagenet_build.val_name(i) for i in range(1, 21)]
  assert val_names != sorted(val_names)  # TFDS must label by sorted name, not tar order.

  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.data.build', '--config=configs/paper.py',
       f'--config.data.data_dir={data_dir}', f'--config.data.manual_dir={manual_dir}',
       '--config.data.statistics=imagenet'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
  assert 'imagenet2012: 1,000 train / 20 eval images, 1000 classes' in proc.stdout, proc.stdout
  assert 'test split not found' in proc.stderr  # No test tar: a warning, not an error.

  builder = tfds.builder('imagenet2012', data_dir=str(data_dir))
  assert set(builder.info.splits.keys()) == {'train', 'validation'}
  names = builder.info.features['label'].names
  assert names == synsets
  train = list(builder.as_dataset(split='train', decoders={'image': tfds.decode.SkipDecoding()})
               .as_numpy_iterator())
  assert len(train) == 1000
  by_name = {ex['file_name'].decode(): ex for ex in train}
  for name, ex in by_name.items():
    assert names[ex['label']] == name.split('_')[0], name  # The synset of its class tar.
  for name, kind in imagenet_build.special_files().items():
    if kind == 'png':  # TFDS re-encodes it as JPEG.
      assert name in by_name
      assert by_name[name]['image'][:2] == b'\xff\xd8', name
    image = tf.io.decode_image(by_name[name]['image']).numpy()
    assert image.shape == (48, 64, 3), (name, image.shape)  # CMYK -> RGB.
  regular = by_name[imagenet_build.train_name(synsets[0], 1)]
  assert tf.io.decode_jpeg(regular['image']).shape == (48, 64, 3)

  val = list(builder.as_dataset(split='validation',
                                decoders={'image': tfds.decode.SkipDecoding()})
             .as_numpy_iterator())
  assert len(val) == 20
  bundled = imagenet_build.validation_labels()
  for ex in val:
    name = ex['file_name'].decode()
    index = int(name[len('ILSVRC2012_val_'):-len('.JPEG')])
    assert names[ex['label']] == bundled[index - 1] == gen['val_labels'][name], name
  assert os.path.isdir(data_dir / 'imagenet2012' / '5.1.0')

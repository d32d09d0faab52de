"""Caffe's reference AlexNet, bvlc_alexnet, switch for switch; also the config that
evaluates its converted weights (docs/original_code_and_caffe.md, "Pretrained weights"):

  python -m alexnet_jax.caffe.convert --caffemodel=bvlc_alexnet.caffemodel --output=runs/bvlc
  python -m alexnet_jax.main --mode=eval --config=configs/caffe_bvlc.py --workdir=runs/bvlc \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars

Expected with the converted weights (Caffe model zoo, ILSVRC-2012 validation, centre crop):
57.1% top-1 / 80.2% top-5 accuracy, i.e. 42.9% / 19.8% error. Its grouped layers (conv2,
conv4, conv5: `group: 2`) are this project's two columns; its layer order is the paper's:
conv -> ReLU -> LRN -> max-pool for layers 1 and 2 (bvlc_reference_caffenet, not this one,
pools before normalising). fc8 is one 1000-way layer, as here by default.
"""

import ml_collections

from alexnet_jax import config


def get_config() -> ml_collections.ConfigDict:
  return config.caffe_bvlc_config()

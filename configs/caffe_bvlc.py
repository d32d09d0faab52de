"""Caffe's reference AlexNet, bvlc_alexnet, switch for switch; also the config that
evaluates its converted weights (README, "Pretrained weights"):

  python -m alexnet_jax.convert --caffemodel=bvlc_alexnet.caffemodel --output=runs/bvlc
  python -m alexnet_jax.main --mode=eval --config=configs/caffe_bvlc.py --workdir=runs/bvlc \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars

Expected with the converted weights (Caffe model zoo, ILSVRC-2012 validation, centre crop):
57.1% top-1 / 80.2% top-5 accuracy, i.e. 42.9% / 19.8% error. Its grouped layers (conv2,
conv4, conv5: `group: 2`) are this project's two columns; its layer order is the paper's:
conv -> ReLU -> LRN -> max-pool for layers 1 and 2 (bvlc_reference_caffenet, not this one,
pools before normalising). fc8 is one 1000-way layer, as here by default.
"""

from configs import paper


def get_config():
  config = paper.get_config()
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

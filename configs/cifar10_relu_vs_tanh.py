"""Fig. 1 (Sec. 3.1): a four-layer CNN on CIFAR-10, ReLU against tanh, no regularisation.

  python -m alexnet_jax.experiments.cifar10 --config=configs/cifar10_relu_vs_tanh.py --workdir=runs/fig1
  python -m alexnet_jax.experiments.cifar10 --config=configs/cifar10_relu_vs_tanh.py:layers_80sec ...
  python -m alexnet_jax.experiments.cifar10 --config=configs/cifar10_relu_vs_tanh.py:lecun ...

The paper: with ReLUs the net reaches 25% training error six times faster (in epochs) than
with tanh units; "the learning rates for each network were chosen independently to make
training as fast as possible. No regularization of any kind was employed." So each
activation gets its own learning-rate search (alexnet_jax/experiments/cifar10.py runs it; the grid is
`lr_grid`), from the same seed and the same initial weights.

The network (the paper says only "four-layer"). The presets follow the nets Alex
Krizhevsky released with cuda-convnet (example-layers/ of code.google.com/p/cuda-convnet,
read here in its GitHub mirror dnouri/cuda-convnet; layer.py and src/cudaconv2/conv_util.cu
of the same code for what each field means):
- 'layers_18pct' (the default), layers-18pct.cfg: conv 5x5x32 -> max pool 3/2 -> same-map
  response norm -> conv 5x5x32 -> avg pool 3/2 -> same-map response norm -> conv 5x5x64 ->
  avg pool 3/2 -> fc10. Four weight layers: the released CIFAR-10 net that fits "four-layer"
  most closely.
- 'layers_80sec', layers-80sec.cfg: the same convs and pools, no response normalisation,
  and an fc64 (ReLU) before fc10, i.e. five weight layers.
- 'lecun': max pools everywhere, 'VALID' pooling
  (32 -> 15 -> 7 -> 3), no normalisation, LeCun-normal init.
Unknown: which of these (if any) Fig. 1 used; the paper's net for Fig. 1 was never released.
Not followed: cuda-convnet's weight decay (wc; Fig. 1 used no regularisation) and its
learning rate (epsW=0.001; Fig. 1 tuned its own, and 0.001 is the grid's lowest point).
"""

import ml_collections

PRESETS = ('layers_18pct', 'layers_80sec', 'lecun')


def get_config(preset: str = 'layers_18pct'):
  if preset not in PRESETS:
    raise ValueError(f'unknown network preset {preset!r}: use one of {", ".join(PRESETS)} '
                     '(--config=configs/cifar10_relu_vs_tanh.py:<preset>).')
  config = ml_collections.ConfigDict()
  config.dataset = 'cifar10'  # TFDS name.
  config.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default.
  config.split = 'train'  # Fig. 1 plots training error.
  config.max_examples = -1  # -1: the whole split (50,000); smaller for smoke runs.
  # cuda-convnet's CIFARDataProvider (convdata.py) feeds raw pixels, 0..255, less the
  # training set's mean image (data_mean): its init scales (initW) are for that range.
  config.input_scale = 1.0 if preset == 'lecun' else 255.0  # Pixel range: [0, input_scale].
  config.mean = 'channel' if preset == 'lecun' else 'image'  # Subtracted: per channel or per pixel.

  # ---- The network: each element a switch; presets and their sources in the docstring.
  config.network = preset
  config.conv_features = (32, 32, 64)  # layers-18pct/80sec.cfg: filters=32, 32, 64.
  config.kernel_size = 5  # Both: filterSize=5, padding=2, stride=1 ('SAME').
  # Pool type per conv block. Both cfgs: pool1 pool=max, pool2 and pool3 pool=avg.
  config.pool_types = ('max', 'max', 'max') if preset == 'lecun' else ('max', 'avg', 'avg')
  config.pool_window = 3  # Both cfgs: sizeX=3, stride=2 (overlapping, as Sec. 3.4).
  config.pool_stride = 2
  # 'cuda_convnet': layer.py's outputsX = ceil((size - sizeX) / stride) + 1 windows from 0,
  # the last clipped at the border (32 -> 16 -> 8 -> 4); an average divides by the pixels
  # inside the image (conv_util.cu, kLocalPool's regionSize). 'valid': whole windows only.
  config.pool_padding = 'valid' if preset == 'lecun' else 'cuda_convnet'
  # Same-map response normalisation (cuda-convnet's type=rnorm, not Sec. 3.3's cross-map
  # one) after these blocks' pools: layers-18pct.cfg has rnorm1 after pool1 and rnorm2
  # after pool2; layers-80sec.cfg has none. b = a / (1 + scale / size^2 * sum a^2)^pow over
  # the size x size window centred on the unit, clipped at the border (layer.py divides
  # scale by size^2; conv_util.cu's kCNorm_fewfilter adds 1 and raises to -pow).
  config.rnorm_after = (1, 2) if preset == 'layers_18pct' else ()
  config.rnorm_size = 3  # layers-18pct.cfg: size=3.
  config.rnorm_scale = 5e-5  # layer-params-18pct.cfg: scale=0.00005.
  config.rnorm_power = 0.75  # layer-params-18pct.cfg: pow=.75.
  # Hidden fully connected ReLU layers before fc10: layers-80sec.cfg has fc64.
  config.fc_hidden = (64,) if preset == 'layers_80sec' else ()
  # 'gaussian': weights ~ N(0, init_std^2), one std per weight layer (conv1..3, fc hidden,
  # fc10), biases 0 (layer.py: initW * randn, initB default 0). 'lecun': std 1/sqrt(fan_in).
  config.init = 'lecun' if preset == 'lecun' else 'gaussian'
  config.init_std = {
      'layers_18pct': (1e-4, 1e-2, 1e-2, 1e-2),  # initW of conv1, conv2, conv3, fc10.
      'layers_80sec': (1e-4, 1e-2, 1e-2, 1e-1, 1e-1),  # conv1..3, fc64, fc10.
      'lecun': (),
  }[preset]
  # Both layer-params files: epsB=0.002 against epsW=0.001, i.e. biases learn twice as fast.
  config.bias_lr_multiplier = 1.0 if preset == 'lecun' else 2.0
  config.activations = ('relu', 'tanh')

  # ---- Training: the released files' momentum and batch; no weight decay (Fig. 1).
  config.momentum = 0.9  # layer-params-*.cfg: momW=0.9; Sec. 5.
  config.batch_size = 128  # Sec. 5 (cuda-convnet's CIFAR-10 examples also used 128).
  config.num_epochs = 40  # The paper's plot runs to ~35 epochs; a trial's longest run.
  config.target_error = 0.25  # Fig. 1's dashed line.

  # ---- The protocol: each activation's learning rate searched (Sec. 3.1's caption).
  # Log-spaced, tried largest first; spans the cfgs' epsW=0.001 (for 0..255 inputs) with
  # room either side. A winner at either end is flagged in the summary: widen the grid then.
  config.lr_grid = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
  config.refine = True  # Then the geometric midpoints between the best and its neighbours.
  config.early_stop = True  # Stop a trial once it can no longer beat the best so far.
  # A trial whose training error is still at or above chance_error after chance_epochs
  # epochs has failed (10 classes: chance is 0.9), as has one whose loss is NaN or Inf.
  config.chance_error = 0.85
  config.chance_epochs = 5
  config.seed = 0  # The search's seed: the same initial weights and order for both activations.
  # More seeds: the chosen rates rerun with each, for the spread of epochs-to-target.
  config.seeds = ml_collections.FieldReference((), field_type=tuple)
  config.progress_seconds = 30.0  # A progress line (images/s, ETA) at most this often.
  return config

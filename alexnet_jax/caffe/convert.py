"""Caffe's bvlc_alexnet weights as a checkpoint of this network, for `--mode=eval`.

  python -m alexnet_jax.caffe.convert --caffemodel=bvlc_alexnet.caffemodel --output=runs/bvlc
  python -m alexnet_jax.main --mode=eval --config=configs/caffe_bvlc.py --workdir=runs/bvlc

bvlc_alexnet is this project's two columns written as one tower: conv2, conv4 and conv5
have `group: 2`, and group g is column g. The conversion (`caffe_to_params`):

- **Columns.** Each layer's output rows are split in two halves, column 0 first. conv1
  (not grouped in Caffe) and conv3, fc6, fc7 (which read both groups) keep all their
  inputs; those are already column 0's channels first, the pinned layout.
- **Kernels.** Caffe's (out, in, h, w) become HWIO, (h, w, in, out); fc weights (out, in)
  become (in, out).
- **fc6's inputs.** Caffe flattens pool5 as (C, H, W); this network as (H, W, C). fc6's 9216
  inputs are reordered from c * 36 + h * 6 + w to (h * 6 + w) * 256 + c.
- **Colour order.** Caffe reads BGR images; conv1's input channels are flipped so that the
  converted network reads RGB. Its inputs are then RGB minus the mean Caffe trained with:
  the ILSVRC-2012 mean image, about BGR (104, 117, 123) per channel, i.e. RGB (123, 117,
  104). `config.data.statistics='imagenet'` subtracts RGB (123.68, 116.78, 103.94), within
  one level of it.

The checkpoint is written with `checkpoints.Checkpoints` as step 0 with a state of params
only, which `load_params` and `--mode=eval` read; it is not a training state to resume.
The file is checked against the model config (configs/caffe_bvlc.py by default): the
layer types and order, every blob's shape, and the LRN, grouping, stride and padding the
file records. A mismatch is a one-line ValueError naming the layer.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from alexnet_jax import model, rundir, storage
from alexnet_jax.caffe import proto as caffe_proto

# The (group, stride, pad) of bvlc_alexnet's convolutions (its deploy.prototxt; conv1 reads
# a 227x227 crop without padding).
CONV_GEOMETRY = {'conv1': (1, 4, 0), 'conv2': (2, 1, 2), 'conv3': (1, 1, 1),
                 'conv4': (2, 1, 1), 'conv5': (2, 1, 1)}
# The layers that matter to the arithmetic, in bvlc_alexnet's order: LRN before pooling in
# layers 1 and 2. (bvlc_reference_caffenet pools first: same shapes, another function.)
EXPECTED_ORDER = ('Convolution', 'LRN', 'Pooling', 'Convolution', 'LRN', 'Pooling',
                  'Convolution', 'Convolution', 'Convolution', 'Pooling', 'InnerProduct',
                  'InnerProduct', 'InnerProduct')


def caffe_shapes(spec: model.Spec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
  """(weights, bias) shapes that Caffe stores for the network of `spec`."""
  w1, w2, w3, w4, w5 = (2 * w for w in spec.conv_widths)
  f6, f7 = (2 * f for f in spec.fc_widths)
  pool5 = 6  # 55 -> 27 -> 13 -> 6 (Sec. 3.5), for 224 (padded) and 227 inputs alike.
  weights = {'conv1': (w1, 3, 11, 11), 'conv2': (w2, w1 // 2, 5, 5), 'conv3': (w3, w2, 3, 3),
             'conv4': (w4, w3 // 2, 3, 3), 'conv5': (w5, w4 // 2, 3, 3),
             'fc6': (f6, w5 * pool5 * pool5), 'fc7': (f7, f6), 'fc8': (spec.num_classes, f7)}
  return {name: (shape, shape[:1]) for name, shape in weights.items()}


# What bvlc_alexnet computes, besides its shapes and the LRN constants the file records:
# two groups, all five convolutions, ReLUs, LRN over all channels with alpha / n, no extra
# normalisation, 3/2 max-pooling and Caffe's dropout (scaled while training, identity at test).
BVLC_MODEL = {'columns': 2, 'remove_conv': '', 'activation': 'relu', 'lrn': True,
              'lrn_alpha_over_n': True, 'lrn_across_columns': True, 'lrn1_before_relu': False,
              'cnorm2': False, 'pool_window': 3, 'pool_stride': 2, 'dropout_form': 'inverted'}


def _check_spec(spec: model.Spec) -> None:
  wrong = [f'model.{k}={getattr(spec, k)!r} (bvlc_alexnet: {v!r})' for k, v in BVLC_MODEL.items()
           if getattr(spec, k) != v]
  if wrong:
    raise ValueError(f'The model config computes another network than bvlc_alexnet: '
                     f'{", ".join(wrong)}; convert and evaluate with configs/caffe_bvlc.py.')


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Legacy blobs are 4-D (1, 1, out, in) for fc weights and (1, 1, 1, n) for biases."""
  shape = tuple(shape)
  while len(shape) > 1 and shape[0] == 1:
    shape = shape[1:]
  return shape


def _learned_layers(net: caffe_proto.Net, source: str) -> dict[str, caffe_proto.Layer]:
  learned = [layer for layer in net.layers if layer.blobs]
  if not learned:
    raise ValueError(f'{source} holds no layer with weights: it is not a binary Caffe model '
                     '(a .prototxt has no weights); download the .caffemodel again.')
  kinds = [layer.type for layer in learned]
  expected = ['Convolution'] * 5 + ['InnerProduct'] * 3
  if kinds != expected:
    found = ', '.join(f'{layer.name} ({layer.type})' for layer in learned)
    raise ValueError(f'{source} has the learned layers {found}; an AlexNet has 5 Convolution '
                     'then 3 InnerProduct layers: this file is another network.')
  return dict(zip(model.LAYERS, learned))


def _check_structure(net: caffe_proto.Net, spec: model.Spec, source: str) -> None:
  """The order of LRN and pooling, and the LRN and convolution settings the file records."""
  learned = _learned_layers(net, source)
  order = tuple(layer.type for layer in net.layers if layer.type in set(EXPECTED_ORDER))
  if any(kind in ('LRN', 'Pooling') for kind in order) and order != EXPECTED_ORDER:
    caffenet = tuple(k for pair in zip(order[1:6:3], order[2:6:3]) for k in pair) == (
        'Pooling', 'LRN', 'Pooling', 'LRN')
    which = ('pools before LRN, as bvlc_reference_caffenet (CaffeNet) does' if caffenet else
             f'orders its layers {" -> ".join(order)}')
    raise ValueError(f'{source} {which}; bvlc_alexnet and this network normalise, then pool '
                     '(conv -> ReLU -> LRN -> pool): the converted network would compute '
                     'another function.')
  lrn_scale = spec.lrn_scale * spec.lrn_n  # Caffe's alpha: it divides alpha by local_size.
  for layer in net.layers:
    lrn = layer.params.get('lrn')
    if layer.type != 'LRN' or lrn is None:
      continue
    got = {'local_size': lrn.get('local_size', 5), 'alpha': lrn.get('alpha', 1.0),
           'beta': lrn.get('beta', 0.75), 'k': lrn.get('k', 1.0),
           'norm_region': lrn.get('norm_region', 0)}
    want = {'local_size': spec.lrn_n, 'alpha': lrn_scale, 'beta': spec.lrn_beta, 'k': spec.lrn_k,
            'norm_region': 0}
    if not all(np.isclose(got[key], want[key], rtol=1e-6) for key in got):
      show = lambda d: ', '.join(f'{key}={value:g}' for key, value in d.items())
      raise ValueError(
          f'{source}: layer {layer.name} is LRN with {show(got)} (norm_region 0 = across '
          f'channels), the model config\'s {show(want)}: set model.lrn_n, lrn_alpha, lrn_beta '
          'and lrn_k to match (Caffe\'s alpha is model.lrn_alpha with lrn_alpha_over_n=True).')
  for name, layer in learned.items():
    conv = layer.params.get('convolution')
    if name not in CONV_GEOMETRY or conv is None:
      continue
    got = (conv.get('group', 1), (conv.get('stride') or [1])[0], (conv.get('pad') or [0])[0])
    if got != CONV_GEOMETRY[name]:
      raise ValueError(f'{source}: {layer.name} has (group, stride, pad) {got}, bvlc_alexnet\'s '
                       f'are {CONV_GEOMETRY[name]}: this file is another network.')


def caffe_to_params(net: caffe_proto.Net, spec: model.Spec, source: str = 'the file') -> model.Params:
  """The params (pinned layout, float32 NumPy) of a parsed bvlc_alexnet-shaped net."""
  _check_spec(spec)
  _check_structure(net, spec, source)
  expected = caffe_shapes(spec)
  arrays = {}
  for name, layer in _learned_layers(net, source).items():
    if len(layer.blobs) != 2:
      raise ValueError(f'{source}: layer {layer.name} has {len(layer.blobs)} blobs, expected '
                       'weights and biases (bias_term: true).')
    pair = []
    for blob, shape, what in zip(layer.blobs, expected[name], ('weights', 'biases')):
      got = _squeeze(blob.shape)
      if got != _squeeze(shape) or blob.data.size != int(np.prod(shape)):
        raise ValueError(
            f'{source}: {layer.name} {what} have shape {blob.shape} ({blob.data.size} values), '
            f'bvlc_alexnet\'s are {shape} for this model config: the file is not an AlexNet of '
            'these widths (check model.conv_features, fc_features, num_classes).')
      pair.append(blob.data.reshape(shape))
    arrays[name] = pair
  if spec.num_classes != expected['fc8'][0][0]:  # pragma: no cover - shapes say it first.
    raise ValueError('fc8 does not match model.num_classes.')
  return _to_layout(arrays, spec)


def _columns(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """[..., 2n] -> [2, ..., n]: column 0 is the first half (Caffe's group 0)."""
  return np.stack(np.split(x, 2, axis=axis))


def _to_layout(arrays: dict[str, list[np.ndarray]], spec: model.Spec) -> model.Params:
  params = {}
  for name in model.CONV_LAYERS:
    weights, bias = arrays[name]
    kernel = weights.transpose(2, 3, 1, 0)  # (out, in, h, w) -> (h, w, in, out).
    if name == 'conv1':
      kernel = kernel[:, :, ::-1, :]  # BGR inputs -> RGB inputs.
    params[name] = {'kernel': _columns(kernel), 'bias': _columns(bias)}
  weights, bias = arrays['fc6']
  out, inputs = weights.shape
  channels = inputs // 36
  # (out, C, H, W) -> (H, W, C, out): the rows of this network's (H, W, C) flattening.
  kernel = weights.reshape(out, channels, 6, 6).transpose(2, 3, 1, 0).reshape(inputs, out)
  params['fc6'] = {'kernel': _columns(kernel), 'bias': _columns(bias)}
  weights, bias = arrays['fc7']
  params['fc7'] = {'kernel': _columns(weights.T), 'bias': _columns(bias)}
  weights, bias = arrays['fc8']
  params['fc8'] = {'kernel': weights.T, 'bias': bias}
  params = {name: {leaf: np.ascontiguousarray(x, np.float32) for leaf, x in layer.items()}
            for name, layer in params.items()}
  model.validate_params(params, spec)
  return params


def read_caffemodel(path: str, spec: model.Spec) -> model.Params:
  """The params of a bvlc_alexnet-shaped .caffemodel file; one-line ValueError otherwise."""
  if not storage.path(path).is_file():
    raise ValueError(f'{path} is not a file: download bvlc_alexnet.caffemodel (docs/original_code_and_caffe.md, '
                     '"Pretrained weights") and pass its path.')
  data = storage.path(path).read_bytes()
  try:
    net = caffe_proto.read_net(data)
  except caffe_proto.CaffeModelError as e:
    raise ValueError(f'{path} is not a readable binary Caffe model ({e}): download it '
                     'again (an interrupted download is truncated).') from None
  return caffe_to_params(net, spec, source=path)


def write_checkpoint(params: model.Params, output: str, meta: dict) -> str:
  """Saves {'params': params} as step 0 of `output`'s checkpoints; returns its directory."""
  # Imported here: orbax is not needed to read and check a file.
  from alexnet_jax.rundir import checkpoints  # pylint: disable=g-import-not-at-top
  directory = rundir.RunDir(output).checkpoints
  if directory.is_dir() and any(directory.iterdir()):
    raise ValueError(f'{directory} already holds checkpoints: choose an empty --output.')
  with checkpoints.Checkpoints(output, keep=1, every=1) as ckpt:
    ckpt.save(0, {'params': params}, meta, force=True)
  return str(directory / '0')


def convert(caffemodel: str, output: str, spec: model.Spec, config_json: str) -> str:
  """Reads `caffemodel`, checks it against `spec` (the config's model), writes the
  checkpoint with the config (`config_json`) in its meta."""
  params = read_caffemodel(caffemodel, spec)
  meta = {'step': 0, 'epoch': 0.0, 'converted_from': str(storage.path(caffemodel)),
          'config': config_json, 'note': 'Converted Caffe weights: params only.'}
  return write_checkpoint(params, output, meta)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  flags_ = flags.FLAGS
  config = flags_.config
  if config is None:
    # From the package, not configs/: the command works from any directory.
    from alexnet_jax import config as configs_lib  # pylint: disable=g-import-not-at-top
    config = configs_lib.caffe_bvlc_config()
  try:
    spec = model.Spec.from_config(config.model)  # The one parse, at the boundary.
    if flags_.dry_run:
      _check_spec(spec)
  except ValueError as e:
    sys.exit(f'error: {e}')
  if flags_.dry_run:
    print(f'dry run: the config computes bvlc_alexnet; would read {flags_.caffemodel} and write '
          f'{rundir.RunDir(flags_.output).checkpoints / "0"}. Nothing was read or written.')
    return
  try:
    where = convert(flags_.caffemodel, flags_.output, spec, config.to_json())
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(f'Wrote {where}. Evaluate it with: python -m alexnet_jax.main --mode=eval '
        f'--config=configs/caffe_bvlc.py --workdir={flags_.output}')
  print(json.dumps({'output': flags_.output, 'checkpoint': where}))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('caffemodel', None, 'Path of bvlc_alexnet.caffemodel.')
  flags.DEFINE_string('output', None, 'Directory to write the checkpoint to (a --workdir).')
  config_flags.DEFINE_config_file('config', None, 'Config whose model the file must match '
                                  '(default: configs/caffe_bvlc.py).', lock_config=True)
  flags.DEFINE_bool('dry_run', False, 'Check the flags and the config, then exit without '
                    'reading the file or writing anything.')
  flags.mark_flags_as_required(['caffemodel', 'output'])
  app.run(main)

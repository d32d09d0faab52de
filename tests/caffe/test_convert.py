"""The Caffe converter: synthetic .caffemodel files against an independent PyTorch
evaluation of the Caffe graph, against Google's protobuf, and malformed input.

The real bvlc_alexnet.caffemodel cannot be downloaded here, so the tests write .caffemodel
files themselves with a small protobuf wire-format writer (below), laid out as Caffe lays
out bvlc_alexnet: the same layers, types and parameters, random weights.
"""

import os
import struct
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import model
from alexnet_jax.caffe import convert
from alexnet_jax.caffe import proto as caffe_proto
from alexnet_jax.config import RunSpec
from alexnet_jax.data import pipeline
from alexnet_jax.data.spec import DataSpec
from alexnet_jax.rundir import checkpoints
from configs import caffe_bvlc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ------------------------------------------------------------- a protobuf wire writer


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _key(field: int, wire: int) -> bytes:
  return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
  return _key(field, 0) + _varint(value)


def _float(field: int, value: float) -> bytes:
  return _key(field, 5) + struct.pack('<f', value)


def _message(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _blob(array: np.ndarray, legacy: bool) -> bytes:
  """BlobProto: legacy (num, channels, height, width) as Caffe wrote before 2015, or shape."""
  if legacy:
    dims = (1,) * (4 - array.ndim) + array.shape
    head = b''.join(_int(f, d) for f, d in zip((1, 2, 3, 4), dims))
  else:
    head = _message(7, _message(1, b''.join(_varint(d) for d in array.shape)))  # Packed dims.
  return head + _message(5, np.ascontiguousarray(array, '<f4').tobytes())


# V1LayerParameter.LayerType numbers of the layers written here.
V1 = {'Data': 5, 'Convolution': 4, 'ReLU': 18, 'LRN': 15, 'Pooling': 17, 'InnerProduct': 14,
      'Dropout': 6, 'SoftmaxWithLoss': 21}
# (field in LayerParameter, field in V1LayerParameter) of each parameter message.
PARAM_FIELDS = {'convolution': (106, 10), 'inner_product': (117, 17), 'lrn': (118, 18),
                'pooling': (121, 19)}


def _param(kind: str, values: dict) -> bytes:
  if kind == 'convolution':
    out = _int(1, values['num_output'])
    for field, key in ((3, 'pad'), (4, 'kernel_size'), (5, 'group'), (6, 'stride')):
      if key in values:
        out += _int(field, values[key])
    return out
  if kind == 'inner_product':
    return _int(1, values['num_output'])
  if kind == 'lrn':
    return (_int(1, values['local_size']) + _float(2, values['alpha']) + _float(3, values['beta'])
            + _float(5, values['k']))
  return _int(1, 0) + _int(2, values['kernel_size']) + _int(3, values['stride'])  # MAX pooling.


def _layer(name, kind, blobs, params, v1, legacy):
  if v1:
    out = _message(4, name.encode()) + _int(5, V1[kind])
    out += b''.join(_message(6, _blob(b, legacy)) for b in blobs)
  else:
    out = _message(1, name.encode()) + _message(2, kind.encode())
    out += b''.join(_message(7, _blob(b, legacy)) for b in blobs)
  for param_kind, values in params.items():
    out += _message(PARAM_FIELDS[param_kind][1 if v1 else 0], _param(param_kind, values))
  return out


def write_caffemodel(path, weights, *, v1=False, legacy=None, lrn=(5, 1e-4, 0.75, 1.0),
                     order='bvlc', skip=()):
  """A NetParameter laid out as bvlc_alexnet's, with `weights` {name: (W, b)} in Caffe's
  shapes. v1 writes V1 `layers` (field 2) as the 2014 model zoo files are; `order`
  'caffenet' pools before LRN, as bvlc_reference_caffenet does."""
  legacy = v1 if legacy is None else legacy
  size, alpha, beta, k = lrn
  norm = {'lrn': {'local_size': size, 'alpha': alpha, 'beta': beta, 'k': k}}
  pool = {'pooling': {'kernel_size': 3, 'stride': 2}}

  def conv(name, group, stride, pad):
    w, b = weights[name]
    return (name, 'Convolution', [w, b], {'convolution': {
        'num_output': w.shape[0], 'kernel_size': w.shape[2], 'group': group, 'stride': stride,
        'pad': pad}})

  def fc(name):
    w, b = weights[name]
    return (name, 'InnerProduct', [w, b], {'inner_product': {'num_output': w.shape[0]}})

  first = [('norm1', 'LRN', [], norm), ('pool1', 'Pooling', [], pool)]
  second = [('norm2', 'LRN', [], norm), ('pool2', 'Pooling', [], pool)]
  if order == 'caffenet':
    first, second = first[::-1], second[::-1]
  layers = ([('data', 'Data', [], {}), conv('conv1', 1, 4, 0), ('relu1', 'ReLU', [], {})] + first
            + [conv('conv2', 2, 1, 2), ('relu2', 'ReLU', [], {})] + second
            + [conv('conv3', 1, 1, 1), ('relu3', 'ReLU', [], {}), conv('conv4', 2, 1, 1),
               ('relu4', 'ReLU', [], {}), conv('conv5', 2, 1, 1), ('relu5', 'ReLU', [], {}),
               ('pool5', 'Pooling', [], pool), fc('fc6'), ('relu6', 'ReLU', [], {}),
               ('drop6', 'Dropout', [], {}), fc('fc7'), ('relu7', 'ReLU', [], {}),
               ('drop7', 'Dropout', [], {}), fc('fc8'), ('loss', 'SoftmaxWithLoss', [], {})])
  parts = [_message(1, b'AlexNet')]
  for name, kind, blobs, params in layers:
    if name not in skip:
      parts.append(_message(2 if v1 else 100, _layer(name, kind, blobs, params, v1, legacy)))
  with open(path, 'wb') as f:
    f.write(b''.join(parts))
  return str(path)


# ------------------------------------------------------------------------ the networks


def small_config() -> ml_collections.ConfigDict:
  """configs/caffe_bvlc.py with narrow layers (Caffe's structure, 227 input)."""
  config = caffe_bvlc.get_config()
  config.model.conv_features = (16, 32, 48, 48, 32)
  config.model.fc_features = (64, 64)
  config.model.num_classes = 10
  return config


def random_weights(cfg, seed=0):
  """Caffe-shaped weights with variance-preserving scales, so every layer (and LRN, whose
  k = 1 term is then comparable with alpha / n * sum a^2) shapes the logits."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, (w_shape, b_shape) in convert.caffe_shapes(model.Spec.from_config(cfg)).items():
    fan_in = int(np.prod(w_shape[1:]))
    w = rng.standard_normal(w_shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    out[name] = (w, rng.normal(0, 0.5, b_shape).astype(np.float32))
  return out


def torch_caffe_forward(weights, images_bgr, lrn=(5, 1e-4, 0.75, 1.0)):
  """bvlc_alexnet's deploy graph in PyTorch on NCHW BGR images: groups=2 convolutions,
  Caffe's LRN (torch's LocalResponseNorm also divides alpha by n), ceil-mode 3/2 pooling,
  the (C, H, W) flatten before fc6, and dropout as the identity (Caffe's test phase)."""
  torch = pytest.importorskip('torch')
  F = torch.nn.functional
  w = {k: (torch.from_numpy(a), torch.from_numpy(b)) for k, (a, b) in weights.items()}
  size, alpha, beta, k = lrn

  def block(x, name, stride=1, pad=0, groups=1):
    return torch.relu(F.conv2d(x, *w[name], stride=stride, padding=pad, groups=groups))

  def norm_pool(x):
    x = F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)
    return F.max_pool2d(x, 3, 2, ceil_mode=True)

  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(images_bgr))
    x = norm_pool(block(x, 'conv1', stride=4))
    x = norm_pool(block(x, 'conv2', pad=2, groups=2))
    x = block(x, 'conv3', pad=1)
    x = block(x, 'conv4', pad=1, groups=2)
    x = F.max_pool2d(block(x, 'conv5', pad=1, groups=2), 3, 2, ceil_mode=True)
    x = x.flatten(1)
    x = torch.relu(F.linear(x, *w['fc6']))
    x = torch.relu(F.linear(x, *w['fc7']))
    return F.linear(x, *w['fc8']).numpy()


def bgr_images(n, seed=1):
  """Mean-subtracted BGR images (NCHW, Caffe's input) on the 0-255 scale."""
  return np.random.default_rng(seed).normal(0, 60, size=(n, 3, 227, 227)).astype(np.float32)


def as_rgb_nhwc(images_bgr):
  return np.ascontiguousarray(images_bgr[:, ::-1].transpose(0, 2, 3, 1))


def relative_error(ours, ref):
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


# ---------------------------------------------------------------------------- the tests


def _read_caffemodel(path, model_cfg):
  """convert.read_caffemodel against a model config, parsed as the command parses it."""
  return convert.read_caffemodel(path, model.Spec.from_config(model_cfg))


def _convert(path, output, config):
  """What `python -m alexnet_jax.caffe.convert --config=...` does with `config`."""
  return convert.convert(path, output, model.Spec.from_config(config.model), config.to_json())



@pytest.mark.parametrize('v1', [False, True], ids=['layer', 'V1 layers'])
def test_converted_checkpoint_gives_caffes_logits(tmp_path, v1):
  config = small_config()
  weights = random_weights(config.model)
  path = write_caffemodel(tmp_path / 'net.caffemodel', weights, v1=v1)
  workdir = str(tmp_path / 'run')
  _convert(path, workdir, config)
  params = alexnet_jax.load_params(workdir)  # The checkpoint --mode=eval reads.
  images = bgr_images(3)
  ref = torch_caffe_forward(weights, images)
  logits = alexnet_jax.apply(params, as_rgb_nhwc(images), config.model)
  assert float(np.std(ref)) > 1.0  # Logits that depend on the input.
  error = relative_error(logits, ref)
  print(f'converted vs PyTorch Caffe graph ({"V1" if v1 else "layer"}): max |diff| / max |ref| '
        f'= {error:.2e}')
  assert error < 1e-4
  # The checks have power: each conversion step left out moves the logits far more.
  unflipped = {**params, 'conv1': {**params['conv1'],
                                   'kernel': params['conv1']['kernel'][:, :, :, ::-1]}}
  assert relative_error(alexnet_jax.apply(unflipped, as_rgb_nhwc(images), config.model), ref) > 1e-2
  within = config.model.copy_and_resolve_references()
  within.lrn_across_columns = False
  assert relative_error(alexnet_jax.apply(params, as_rgb_nhwc(images), within), ref) > 1e-3
  k2 = config.model.copy_and_resolve_references()
  k2.lrn_k = 2.0
  assert relative_error(alexnet_jax.apply(params, as_rgb_nhwc(images), k2), ref) > 1e-2


def test_full_bvlc_alexnet_shapes(tmp_path):
  # The real file's layout: V1 `layers`, legacy 4-D blob shapes, AlexNet's full widths.
  config = caffe_bvlc.get_config()
  weights = random_weights(config.model, seed=3)
  path = write_caffemodel(tmp_path / 'bvlc_alexnet.caffemodel', weights, v1=True)
  params = _read_caffemodel(path, config.model)
  shapes = {n: {k: v.shape for k, v in layer.items()} for n, layer in params.items()}
  assert shapes == alexnet_jax.param_shapes(config.model)
  assert alexnet_jax.count_params(params) == 60_965_224
  # fc6: Caffe's input c * 36 + h * 6 + w is this network's row (h * 6 + w) * 256 + c;
  # output unit o sits in column o // 2048.
  w6 = weights['fc6'][0]
  for o, c, h, w in ((0, 0, 0, 0), (5, 17, 2, 3), (2048 + 7, 200, 5, 5), (4095, 255, 4, 1)):
    np.testing.assert_array_equal(params['fc6']['kernel'][o // 2048, (h * 6 + w) * 256 + c, o % 2048],
                                  w6[o, c * 36 + h * 6 + w])
  # conv1: RGB input channel i is Caffe's BGR channel 2 - i.
  np.testing.assert_array_equal(params['conv1']['kernel'][1, 3, 4, 0, 5],
                                weights['conv1'][0][48 + 5, 2, 3, 4])
  images = bgr_images(1, seed=4)
  ref = torch_caffe_forward(weights, images)
  error = relative_error(alexnet_jax.apply(params, as_rgb_nhwc(images), config.model), ref)
  print(f'full-size bvlc_alexnet shapes vs PyTorch: max |diff| / max |ref| = {error:.2e}')
  assert error < 1e-4


def _protobuf_classes():
  """Caffe's messages (the fields the converter reads) built with Google's protobuf."""
  pytest.importorskip('google.protobuf')
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  fdp = descriptor_pb2.FileDescriptorProto(name='caffe_subset.proto', package='caffe_subset')
  F = descriptor_pb2.FieldDescriptorProto

  def message(name, *fields):
    m = fdp.message_type.add(name=name)
    for fname, number, kind, label, type_name, packed in fields:
      f = m.field.add(name=fname, number=number, type=kind, label=label)
      if type_name:
        f.type_name = '.caffe_subset.' + type_name
      if packed:
        f.options.packed = True

  opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
  message('BlobShape', ('dim', 1, F.TYPE_INT64, rep, None, True))
  message('BlobProto', ('num', 1, F.TYPE_INT32, opt, None, False),
          ('channels', 2, F.TYPE_INT32, opt, None, False),
          ('height', 3, F.TYPE_INT32, opt, None, False),
          ('width', 4, F.TYPE_INT32, opt, None, False),
          ('data', 5, F.TYPE_FLOAT, rep, None, True),
          ('shape', 7, F.TYPE_MESSAGE, opt, 'BlobShape', False))
  message('ConvolutionParameter', ('num_output', 1, F.TYPE_UINT32, opt, None, False),
          ('pad', 3, F.TYPE_UINT32, rep, None, False),
          ('kernel_size', 4, F.TYPE_UINT32, rep, None, False),
          ('group', 5, F.TYPE_UINT32, opt, None, False),
          ('stride', 6, F.TYPE_UINT32, rep, None, False))
  message('LRNParameter', ('local_size', 1, F.TYPE_UINT32, opt, None, False),
          ('alpha', 2, F.TYPE_FLOAT, opt, None, False), ('beta', 3, F.TYPE_FLOAT, opt, None, False),
          ('k', 5, F.TYPE_FLOAT, opt, None, False))
  message('LayerParameter', ('name', 1, F.TYPE_STRING, opt, None, False),
          ('type', 2, F.TYPE_STRING, opt, None, False),
          ('blobs', 7, F.TYPE_MESSAGE, rep, 'BlobProto', False),
          ('convolution_param', 106, F.TYPE_MESSAGE, opt, 'ConvolutionParameter', False),
          ('lrn_param', 118, F.TYPE_MESSAGE, opt, 'LRNParameter', False))
  message('V1LayerParameter', ('name', 4, F.TYPE_STRING, opt, None, False),
          ('type', 5, F.TYPE_INT32, opt, None, False),  # An enum on the wire is a varint.
          ('blobs', 6, F.TYPE_MESSAGE, rep, 'BlobProto', False),
          ('convolution_param', 10, F.TYPE_MESSAGE, opt, 'ConvolutionParameter', False),
          ('lrn_param', 18, F.TYPE_MESSAGE, opt, 'LRNParameter', False))
  message('NetParameter', ('name', 1, F.TYPE_STRING, opt, None, False),
          ('layers', 2, F.TYPE_MESSAGE, rep, 'V1LayerParameter', False),
          ('layer', 100, F.TYPE_MESSAGE, rep, 'LayerParameter', False))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fdp)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName('caffe_subset.NetParameter'))


def test_reader_and_writer_agree_with_google_protobuf(tmp_path):
  NetParameter = _protobuf_classes()
  rng = np.random.default_rng(5)
  w = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
  b = rng.normal(size=(4,)).astype(np.float32)
  # 1. Serialized by protobuf itself, read by caffe_proto: both layer message versions.
  for v1 in (False, True):
    net = NetParameter(name='tiny')
    layer = (net.layers if v1 else net.layer).add(name='conv1')
    if v1:
      layer.type = 4
    else:
      layer.type = 'Convolution'
    layer.convolution_param.num_output = 4
    layer.convolution_param.group = 2
    layer.convolution_param.stride.append(4)
    layer.convolution_param.pad.append(3)
    if v1:  # The legacy 4-D shape.
      layer.blobs.add(num=4, channels=3, height=2, width=2, data=w.ravel().tolist())
    else:
      layer.blobs.add(shape={'dim': list(w.shape)}, data=w.ravel().tolist())
    layer.blobs.add(shape={'dim': [4]}, data=b.tolist())
    norm = (net.layers if v1 else net.layer).add(name='norm1')
    norm.type = 15 if v1 else 'LRN'
    norm.lrn_param.local_size, norm.lrn_param.alpha, norm.lrn_param.beta = 5, 1e-4, 0.75
    read = caffe_proto.read_net(net.SerializeToString())
    assert read.name == 'tiny' and read.format == ('layers' if v1 else 'layer')
    conv1, norm1 = read.layers
    assert (conv1.name, conv1.type, norm1.type) == ('conv1', 'Convolution', 'LRN')
    assert conv1.blobs[0].shape == w.shape and conv1.blobs[1].shape == (4,)
    np.testing.assert_array_equal(conv1.blobs[0].data.reshape(w.shape), w)
    np.testing.assert_array_equal(conv1.blobs[1].data, b)
    assert conv1.params['convolution'] == {'num_output': 4, 'group': 2, 'stride': [4], 'pad': [3]}
    assert norm1.params['lrn']['local_size'] == 5
    assert norm1.params['lrn']['alpha'] == pytest.approx(1e-4)
  # 2. The test's own writer, parsed by protobuf: the files the other tests use are real
  # protobuf encodings of Caffe's layout.
  config = small_config()
  weights = random_weights(config.model)
  for v1 in (False, True):
    path = write_caffemodel(tmp_path / f'net{v1}.caffemodel', weights, v1=v1)
    with open(path, 'rb') as f:
      parsed = NetParameter.FromString(f.read())
    layers = parsed.layers if v1 else parsed.layer
    by_name = {layer.name: layer for layer in layers}
    assert len(layers) == 24
    conv2 = by_name['conv2']
    np.testing.assert_array_equal(np.array(conv2.blobs[0].data, np.float32),
                                  weights['conv2'][0].ravel())
    assert conv2.convolution_param.group == 2
    assert by_name['norm1'].lrn_param.alpha == pytest.approx(1e-4)
    shape = ([conv2.blobs[0].num, conv2.blobs[0].channels, conv2.blobs[0].height,
              conv2.blobs[0].width] if v1 else list(conv2.blobs[0].shape.dim))
    assert tuple(shape) == weights['conv2'][0].shape


def _one_line_error(call, *match):
  with pytest.raises(ValueError) as info:
    call()
  message = str(info.value)
  assert '\n' not in message, message
  for m in match:
    assert m in message, message
  return message


def test_malformed_and_truncated_files_are_one_line_errors(tmp_path):
  config = small_config()
  good = write_caffemodel(tmp_path / 'good.caffemodel', random_weights(config.model))
  with open(good, 'rb') as f:
    data = f.read()
  cases = {
      'half': data[:len(data) // 2],  # An interrupted download.
      'short': data[:-3],
      'empty': b'',
      'text': b'name: "AlexNet"\nlayer {\n  name: "conv1"\n  type: "Convolution"\n}\n',
      'noise': np.random.default_rng(0).bytes(5000),
  }
  for name, content in cases.items():
    path = tmp_path / f'{name}.caffemodel'
    path.write_bytes(content)
    message = _one_line_error(lambda p=str(path): _read_caffemodel(p, config.model),
                              str(path))
    assert 'download' in message, message
    if name in ('half', 'short'):
      assert 'truncated' in message, message
  _one_line_error(lambda: _read_caffemodel(str(tmp_path / 'missing'), config.model),
                  'not a file')


def test_networks_that_are_not_bvlc_alexnet_are_one_line_errors(tmp_path):
  config = small_config()
  weights = random_weights(config.model)
  # An ungrouped conv2 (it reads all 16 conv1 maps, not its column's 8): named, both shapes.
  wrong = dict(weights)
  wrong['conv2'] = (np.zeros((32, 16, 5, 5), np.float32), weights['conv2'][1])
  path = write_caffemodel(tmp_path / 'ungrouped.caffemodel', wrong)
  _one_line_error(lambda: _read_caffemodel(path, config.model), 'conv2', '(32, 16, 5, 5)',
                  '(32, 8, 5, 5)', 'not an AlexNet')
  # The full bvlc_alexnet config and a narrow file.
  path = write_caffemodel(tmp_path / 'narrow.caffemodel', weights)
  _one_line_error(lambda: _read_caffemodel(path, caffe_bvlc.get_config().model),
                  'conv1', '(96, 3, 11, 11)')
  # A learned layer missing: another network.
  path = write_caffemodel(tmp_path / 'seven.caffemodel', weights, skip=('fc7',))
  _one_line_error(lambda: _read_caffemodel(path, config.model), 'learned layers')
  # CaffeNet's order (pool before LRN): same shapes, another function.
  path = write_caffemodel(tmp_path / 'caffenet.caffemodel', weights, order='caffenet')
  _one_line_error(lambda: _read_caffemodel(path, config.model), 'CaffeNet')
  # LRN constants other than the config's.
  path = write_caffemodel(tmp_path / 'lrn.caffemodel', weights, lrn=(5, 1e-3, 0.75, 1.0))
  _one_line_error(lambda: _read_caffemodel(path, config.model), 'norm1', 'lrn_alpha')
  # A model config that computes another function than Caffe's (the paper's dropout form).
  path = write_caffemodel(tmp_path / 'ok.caffemodel', weights)
  paper_dropout = small_config().model
  paper_dropout.dropout_form = 'paper'
  _one_line_error(lambda: _read_caffemodel(path, paper_dropout), 'dropout_form')


def _command(*args):
  return subprocess.run([sys.executable, '-m', 'alexnet_jax.caffe.convert', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_command_line_and_mode_eval(tmp_path, write_dark_and_bright):
  from alexnet_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = small_config()
  config.model.num_classes = 2
  weights = random_weights(config.model)
  path = write_caffemodel(tmp_path / 'net.caffemodel', weights, v1=True)
  workdir = str(tmp_path / 'run')
  overrides = ['--config=configs/caffe_bvlc.py', '--config.model.conv_features=(16,32,48,48,32)',
               '--config.model.fc_features=(64,64)', '--config.model.num_classes=2']
  done = _command(f'--caffemodel={path}', f'--output={workdir}', *overrides)
  assert done.returncode == 0, done.stderr[-2000:]
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '0'))
  # Again into the same directory: refused in one line, nothing overwritten.
  again = _command(f'--caffemodel={path}', f'--output={workdir}', *overrides)
  assert again.returncode != 0
  assert again.stderr.strip().splitlines()[-1].startswith('error: ') and 'already' in again.stderr
  # A bad file: one line on stderr.
  bad = tmp_path / 'bad.caffemodel'
  bad.write_bytes(b'\x0a\xff\xff')
  failed = _command(f'--caffemodel={bad}', f'--output={tmp_path / "bad_run"}', *overrides)
  assert failed.returncode != 0
  assert failed.stderr.strip().splitlines()[-1].startswith('error: ')
  # --mode=eval's code path on the converted checkpoint, on a tiny image folder.
  folder = write_dark_and_bright(tmp_path / 'images', {'train': 2, 'val': 3})
  config.data.source = 'folder'
  config.data.folder = folder
  config.mesh.data, config.mesh.model = 1, 2
  config.eval_batch_size = 2
  result = evaluate.evaluate_checkpoint(RunSpec.from_config(config), workdir)
  assert result['step'] == 0
  for views in ('center', 'ten'):
    assert result[views]['examples'] == 6
  # The same numbers as the loaded params through `apply` on the pipeline's centre crops.
  batch = next(pipeline.eval_batches(DataSpec.from_config(config.data), global_batch_size=6,
                                     views='center'))
  logits = np.asarray(alexnet_jax.apply(alexnet_jax.load_params(workdir), batch['images'][:, 0],
                                        config.model))
  assert result['center']['top1_error'] == pytest.approx(
      np.mean(np.argmax(logits, -1) != batch['labels']), abs=1e-6)
  assert checkpoints.Checkpoints(workdir).latest_step() == 0


def test_converted_weights_go_to_a_bucket_and_come_back(tmp_path, on_object_store):
  """`convert --output=gs://...`: the checkpoint is written to the object store and reads back
  as exactly the file's weights; a second conversion there is refused in one line."""
  config = small_config()
  path = write_caffemodel(tmp_path / 'net.caffemodel', random_weights(config.model))
  output = f"{on_object_store.make_bucket('alexnet-jax-convert')}/converted"
  assert _convert(str(path), output, config) == f'{output}/checkpoints/0'
  expected = _read_caffemodel(str(path), config.model)
  loaded = alexnet_jax.load_params(output)
  for name in expected:
    for leaf in expected[name]:
      np.testing.assert_array_equal(loaded[name][leaf], expected[name][leaf])
  with pytest.raises(ValueError, match=f'{output}/checkpoints already holds checkpoints'):
    _convert(str(path), output, config)

"""A reader of Caffe's binary .caffemodel files: protobuf wire format, no Caffe, no codegen.

A .caffemodel is one serialized `NetParameter` message (caffe.proto). Only the fields a
weight converter needs are decoded; everything else is skipped by its wire type:

  NetParameter      name = 1, layers = 2 (V1LayerParameter, files written before 2015),
                    layer = 100 (LayerParameter)
  LayerParameter    name = 1, type = 2 (string), blobs = 7, convolution_param = 106,
                    inner_product_param = 117, lrn_param = 118, pooling_param = 121
  V1LayerParameter  name = 4, type = 5 (enum), blobs = 6, convolution_param = 10,
                    inner_product_param = 17, lrn_param = 18, pooling_param = 19,
                    layer = 1 (a V0 layer: too old, refused)
  BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape),
                    data = 5 (packed float), shape = 7 (BlobShape: dim = 1, int64),
                    double_data = 8 (packed double)
  ConvolutionParameter  num_output = 1, pad = 3, kernel_size = 4, group = 5, stride = 6
  InnerProductParameter num_output = 1
  LRNParameter      local_size = 1, alpha = 2, beta = 3, norm_region = 4, k = 5
  PoolingParameter  pool = 1, kernel_size = 2, stride = 3, pad = 4

Wire format: each field is a varint key (field number << 3 | wire type) followed by a
varint (type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5).
Repeated scalars come packed (one length-delimited field) or one field per value; both
are read. Blob data becomes a float32 NumPy array without a copy per value.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Iterator

import numpy as np

# V1LayerParameter.LayerType values (caffe.proto) -> the type strings of LayerParameter.
V1_TYPES = {
    0: 'None', 1: 'Accuracy', 2: 'BNLL', 3: 'Concat', 4: 'Convolution', 5: 'Data',
    6: 'Dropout', 7: 'EuclideanLoss', 8: 'Flatten', 9: 'HDF5Data', 10: 'HDF5Output',
    11: 'Im2col', 12: 'ImageData', 13: 'InfogainLoss', 14: 'InnerProduct', 15: 'LRN',
    16: 'MultinomialLogisticLoss', 17: 'Pooling', 18: 'ReLU', 19: 'Sigmoid', 20: 'Softmax',
    21: 'SoftmaxWithLoss', 22: 'Split', 23: 'TanH', 24: 'WindowData', 25: 'Eltwise',
    26: 'Power', 27: 'SigmoidCrossEntropyLoss', 28: 'HingeLoss', 29: 'MemoryData',
    30: 'ArgMax', 31: 'Threshold', 32: 'DummyData', 33: 'Slice', 34: 'MVN', 35: 'AbsVal',
    36: 'Silence', 37: 'ContrastiveLoss', 38: 'Exp', 39: 'Deconvolution',
}

# Field numbers of the two layer messages: (name, type, blobs, convolution_param,
# inner_product_param, lrn_param, pooling_param).
_LAYER_FIELDS = {'layer': (1, 2, 7, 106, 117, 118, 121), 'layers': (4, 5, 6, 10, 17, 18, 19)}


class CaffeModelError(ValueError):
  """The bytes are not a readable binary Caffe NetParameter."""


@dataclasses.dataclass
class Blob:
  shape: tuple[int, ...]  # BlobShape dims, or the legacy (num, channels, height, width).
  data: np.ndarray  # float32, flat.


@dataclasses.dataclass
class Layer:
  name: str
  type: str  # LayerParameter's type string ('Convolution', 'LRN', ...), also for V1 files.
  blobs: list[Blob]
  # Decoded sub-messages present in the file: {'convolution': {...}, 'lrn': {...}, ...}
  # with only the fields the file sets (absent fields take caffe.proto's defaults).
  params: dict[str, dict[str, object]]


@dataclasses.dataclass
class Net:
  name: str
  layers: list[Layer]
  format: str  # 'layer' (LayerParameter) or 'layers' (V1LayerParameter).


# --------------------------------------------------------------------------- wire format


def _fail(what: str, pos: int) -> CaffeModelError:
  return CaffeModelError(f'{what} at byte {pos}')


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    if pos >= end:
      raise _fail('a varint runs past the end of its message (truncated file?)', pos)
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7
    if shift >= 64:
      raise _fail('a varint longer than 10 bytes', pos)


def fields(buf: memoryview, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[int, int, object]]:
  """(field number, wire type, value) of one message: an int for varints, a (start, end)
  span for length-delimited fields, and the raw bytes for fixed 32- and 64-bit fields."""
  end = len(buf) if end is None else end
  pos = start
  while pos < end:
    key, pos = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
      raise _fail('field number 0', pos)
    if wire == 0:
      value, pos = _varint(buf, pos, end)
    elif wire == 1:
      if pos + 8 > end:
        raise _fail('a 64-bit field runs past the end (truncated file?)', pos)
      value, pos = bytes(buf[pos:pos + 8]), pos + 8
    elif wire == 2:
      length, pos = _varint(buf, pos, end)
      if pos + length > end:
        raise _fail(f'a field of {length} bytes runs past the end of its message '
                    '(truncated file?)', pos)
      value, pos = (pos, pos + length), pos + length
    elif wire == 5:
      if pos + 4 > end:
        raise _fail('a 32-bit field runs past the end (truncated file?)', pos)
      value, pos = bytes(buf[pos:pos + 4]), pos + 4
    else:  # 3 and 4 are the deprecated groups, 6 and 7 do not exist: not a Caffe message.
      raise _fail(f'wire type {wire} (field {number})', pos)
    yield number, wire, value


def _string(buf: memoryview, span) -> str:
  return bytes(buf[span[0]:span[1]]).decode('utf-8', errors='replace')


def _ints(buf: memoryview, wire: int, value) -> list[int]:
  """A repeated varint field's values: packed (wire type 2) or one (wire type 0)."""
  if wire == 0:
    return [value]
  if wire != 2:
    raise _fail(f'an integer field of wire type {wire}', 0)
  out, pos = [], value[0]
  while pos < value[1]:
    v, pos = _varint(buf, pos, value[1])
    out.append(v)
  return out


def _float(wire: int, value) -> float:
  if wire != 5:
    raise _fail(f'a float field of wire type {wire}', 0)
  return struct.unpack('<f', value)[0]


def _floats(buf: memoryview, wire: int, value, dtype: str) -> np.ndarray:
  """A repeated float/double field: packed, or one fixed-size value."""
  if wire == 2:
    raw = buf[value[0]:value[1]]
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
      raise _fail(f'packed {dtype} data of {len(raw)} bytes', value[0])
    return np.frombuffer(raw, dtype=dtype)
  if (wire, dtype) in ((5, '<f4'), (1, '<f8')):
    return np.frombuffer(value, dtype=dtype)
  raise _fail(f'blob data of wire type {wire}', 0)


# --------------------------------------------------------------------------- messages


def _blob(buf: memoryview, span) -> Blob:
  legacy = {}
  dims = None
  chunks = []
  for number, wire, value in fields(buf, *span):
    if number in (1, 2, 3, 4) and wire == 0:
      legacy[number] = value
    elif number == 5:
      chunks.append(_floats(buf, wire, value, '<f4'))
    elif number == 8:
      chunks.append(_floats(buf, wire, value, '<f8').astype(np.float32))
    elif number == 7 and wire == 2:
      dims = []
      for n, w, v in fields(buf, *value):
        if n == 1:
          dims += _ints(buf, w, v)
  if dims is None:
    dims = [legacy.get(i, 1 if legacy else 0) for i in (1, 2, 3, 4)] if legacy else []
  data = chunks[0] if len(chunks) == 1 else (
      np.concatenate(chunks) if chunks else np.zeros([0], np.float32))
  return Blob(tuple(int(d) for d in dims), data.astype(np.float32, copy=False))


def _param(buf: memoryview, span, names: dict[int, tuple[str, str]]) -> dict[str, object]:
  """A parameter sub-message: names = {field: (name, 'int' | 'ints' | 'float')}."""
  out: dict[str, object] = {}
  for number, wire, value in fields(buf, *span):
    if number not in names:
      continue
    name, kind = names[number]
    if kind == 'float':
      out[name] = _float(wire, value)
    elif kind == 'ints':
      out[name] = out.get(name, []) + _ints(buf, wire, value)
    else:
      out[name] = _ints(buf, wire, value)[-1]
  return out


_CONVOLUTION = {1: ('num_output', 'int'), 3: ('pad', 'ints'), 4: ('kernel_size', 'ints'),
                5: ('group', 'int'), 6: ('stride', 'ints')}
_INNER_PRODUCT = {1: ('num_output', 'int')}
_LRN = {1: ('local_size', 'int'), 2: ('alpha', 'float'), 3: ('beta', 'float'),
        4: ('norm_region', 'int'), 5: ('k', 'float')}
_POOLING = {1: ('pool', 'int'), 2: ('kernel_size', 'int'), 3: ('stride', 'int'), 4: ('pad', 'int')}


def _layer(buf: memoryview, span, form: str) -> Layer:
  f_name, f_type, f_blobs, f_conv, f_ip, f_lrn, f_pool = _LAYER_FIELDS[form]
  name, kind, blobs, params = '', '', [], {}
  for number, wire, value in fields(buf, *span):
    if number == f_name and wire == 2:
      name = _string(buf, value)
    elif number == f_type:
      kind = _string(buf, value) if wire == 2 else V1_TYPES.get(value, f'V1 type {value}')
    elif number == f_blobs and wire == 2:
      blobs.append(_blob(buf, value))
    elif number == f_conv and wire == 2:
      params['convolution'] = _param(buf, value, _CONVOLUTION)
    elif number == f_ip and wire == 2:
      params['inner_product'] = _param(buf, value, _INNER_PRODUCT)
    elif number == f_lrn and wire == 2:
      params['lrn'] = _param(buf, value, _LRN)
    elif number == f_pool and wire == 2:
      params['pooling'] = _param(buf, value, _POOLING)
    elif form == 'layers' and number == 1 and wire == 2:
      raise CaffeModelError(
          'a V0 (pre-2014) layer: convert the file with Caffe\'s upgrade_net_proto_binary first')
  return Layer(name, kind, blobs, params)


def read_net(data: bytes) -> Net:
  """The layers of a serialized NetParameter, in file (network) order.

  Raises CaffeModelError (a ValueError) for bytes that do not parse as one.
  """
  buf = memoryview(data)
  name, layers, forms = '', [], set()
  for number, wire, value in fields(buf):
    if number == 1 and wire == 2:
      name = _string(buf, value)
    elif number in (2, 100) and wire == 2:
      form = 'layers' if number == 2 else 'layer'
      forms.add(form)
      layers.append(_layer(buf, value, form))
  if len(forms) > 1:
    raise CaffeModelError('the file mixes V1 `layers` and `layer` entries')
  return Net(name, layers, forms.pop() if forms else '')

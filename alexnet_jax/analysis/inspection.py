"""Looking inside the network from a notebook: a run's params with its config, an image file
in and out of the model's input, and every layer's activations from one pass.

  params, config = load_run('runs/demo')          # The latest checkpoint and the config it ran.
  x = preprocess('cat.jpg', config)               # [224, 224, 3]: what the network reads.
  acts = activations(params, x[None], config)     # {'conv1': ..., ..., 'fc8': logits}
  by_column(acts, config)['conv2']                # [column 0's maps, column 1's maps]
  deprocess(x, config)                            # uint8 RGB again, for display.

Nothing here needs TensorFlow or a device mesh, except the mean image of a run whose
statistics come from its training split (`mean_image` reads that file through the input
pipeline, which checks it belongs to that very split). `exchanges` is the one exception
to "no mesh": it traces the network over a ('data', 'model') mesh to list what the columns
send each other.
"""

from __future__ import annotations

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, UnidentifiedImageError

from alexnet_jax import model, rundir, storage
from alexnet_jax.data import spec as data_spec

# ImageNet's per-channel RGB mean (0-255), what config.data.statistics='imagenet' subtracts.
IMAGENET_RGB_MEAN = np.array(data_spec.IMAGENET_RGB_MEAN, np.float32)


# --------------------------------------------------------------------------- a trained run


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).split())[:200]


def run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a run trained with: <workdir>/config.json, which training writes before its
  first step, or else the config its latest checkpoint records (converted Caffe weights
  have only that). The workdir may be local or on an object store (gs://...)."""
  path = storage.path(workdir)
  config_file = rundir.RunDir(workdir).config
  if config_file.is_file():
    try:
      return ml_collections.ConfigDict(json.loads(config_file.read_text()))
    except ValueError as e:
      raise ValueError(f'{config_file} is not a config written by training ({_one_line(e)}); '
                       'restore it, or pass config= to load_run.') from None
  from alexnet_jax.rundir import checkpoints  # pylint: disable=g-import-not-at-top  (orbax)
  meta = checkpoints.load_meta(path)
  if not meta.get('config'):
    raise ValueError(f'{path} has no config.json and its checkpoint records no config: pass the '
                     "config it was trained with, load_run(workdir, config=...).")
  return ml_collections.ConfigDict(json.loads(meta['config']))


def load_run(workdir: str | os.PathLike, config: ml_collections.ConfigDict | None = None):
  """(params, config) of a run: its latest checkpoint's params as NumPy arrays, and the
  config they were trained with (`run_config`), or `config` if given.

  Raises a one-line FileNotFoundError or ValueError naming the folder and what is missing
  (no checkpoint, no config), or the first parameter that does not fit the config.
  """
  path = storage.path(workdir)
  if not path.is_dir():
    raise FileNotFoundError(f'{path} is not a directory: pass a training workdir (one with '
                            'checkpoints/ and config.json), local or gs://.')
  from alexnet_jax.rundir import checkpoints  # pylint: disable=g-import-not-at-top  (orbax)
  params = checkpoints.load_params(path)
  config = run_config(path) if config is None else config
  try:
    model.validate_params(params, model.Spec.from_config(config.model))
  except ValueError as e:
    raise ValueError(f'The checkpoint in {path} does not fit its config: {e}') from None
  return params, config


# ------------------------------------------------------------------- an image in and out


def mean_image(config) -> np.ndarray:
  """The [stored_size, stored_size, 3] 0-255 mean image the run subtracts (Sec. 2).

  'imagenet' statistics are the per-channel constant (no TensorFlow); 'train_split' ones
  are read from the run's statistics file through the input pipeline (TensorFlow).
  """
  size = config.data.stored_size
  if config.data.statistics == 'imagenet':
    return np.broadcast_to(IMAGENET_RGB_MEAN, (size, size, 3)).astype(np.float32)
  from alexnet_jax.data import statistics  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return statistics.load_stats(data_spec.DataSpec.from_config(config.data)).mean_image


def _mean_patch(config, mean: np.ndarray | None) -> np.ndarray:
  """The window of the mean image a centre crop subtracts: its central crop x crop patch,
  for both of `config.data.mean_patch`'s choices ('crop': the crop's own window, which is
  the centre for a centre crop; 'center': always the centre)."""
  mean = mean_image(config) if mean is None else np.asarray(mean, np.float32)
  size, crop = config.data.stored_size, config.data.crop_size
  if mean.shape == (crop, crop, 3):
    return mean
  if mean.shape != (size, size, 3):
    raise ValueError(f'mean must be [{size}, {size}, 3] (config.data.stored_size) or '
                     f'[{crop}, {crop}, 3], got {list(mean.shape)}.')
  top = (size - crop) // 2
  return mean[top:top + crop, top:top + crop]


def read_image(path: str | os.PathLike) -> np.ndarray:
  """An image file as uint8 RGB [h, w, 3]; a one-line ValueError naming a file that is not one."""
  try:
    with storage.path(path).open('rb') as f, Image.open(f) as image:
      return np.asarray(image.convert('RGB'))
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no such file.') from None
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise ValueError(f'{path} is not an image PIL can read ({_one_line(e)}): pass a JPEG, '
                     'PNG, BMP, GIF or WebP file.') from None


def stored(image, size: int = 256) -> np.ndarray:
  """Sec. 2 in NumPy: shorter side to `size`, then the central size x size patch, float32
  0-255. The resampling is PIL's antialiased bilinear, as the input pipeline's
  (tf.image.resize(antialias=True)); an image whose shorter side is already `size` is cropped
  only."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'an image must be [height, width, 3] RGB, got shape {list(image.shape)}.')
  h, w = image.shape[:2]
  if min(h, w) != size:
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    channels = np.asarray(image, np.float32)
    # PIL resamples float32 images one channel ('F' mode) at a time, with no rounding.
    image = np.stack([np.asarray(Image.fromarray(channels[..., c], mode='F').resize(
        (new_w, new_h), Image.BILINEAR)) for c in range(3)], axis=-1)
    h, w = new_h, new_w
  top, left = (h - size) // 2, (w - size) // 2
  return np.asarray(image[top:top + size, left:left + size], np.float32)


def preprocess(image, config, mean: np.ndarray | None = None) -> np.ndarray:
  """An image (file path, or uint8/float [h, w, 3] RGB array in 0-255) -> the network's
  input for it, [crop, crop, 3] float32: the test-time centre view of Sec. 2 and 4.1.

  Shorter side to config.data.stored_size (256), central 256 patch, central crop
  (config.data.crop_size, 224), minus the mean image's window, times config.data.input_scale.
  mean: the run's mean image (default: `mean_image(config)`).
  """
  if isinstance(image, (str, os.PathLike)):
    image = read_image(image)
  crop = config.data.crop_size
  square = stored(image, config.data.stored_size)
  top = (square.shape[0] - crop) // 2
  centre = square[top:top + crop, top:top + crop]
  return ((centre - _mean_patch(config, mean)) * config.data.input_scale).astype(np.float32)


def deprocess(x, config, mean: np.ndarray | None = None) -> np.ndarray:
  """The inverse of `preprocess` for display: network inputs [..., crop, crop, 3] -> uint8 RGB."""
  x = np.asarray(x, np.float32)
  return np.clip(np.rint(x / config.data.input_scale + _mean_patch(config, mean)), 0,
                 255).astype(np.uint8)


# ----------------------------------------------------------------- inside the network


@functools.partial(jax.jit, static_argnames=('spec', 'train'))
def _activations(params, images, rng, spec, train):
  net = model.AlexNet(spec)
  _, state = net.apply({'params': params}, images, train=train, rngs={'dropout': rng},
                       mutable=[model.ACTIVATIONS_COLLECTION])
  return state[model.ACTIVATIONS_COLLECTION]['layers']


def activations(params, images, cfg, *, train: bool = False, rng=None) -> dict[str, jax.Array]:
  """Every layer's activations of `images` [N, 224, 224, 3] from one jitted pass, in
  network order (`model.ACTIVATIONS`, those this config has): the same arrays as
  `apply(..., layer=name)` for each name, both columns concatenated, column 0 first.

  cfg: a model config (config.model) or a whole run config. 'fc8' is the logits.
  """
  spec = model.Spec.from_config(_model_cfg(cfg))
  images = jnp.asarray(images)
  model.validate_images(images, spec)
  model.validate_params(params, spec)
  if train and rng is None:
    raise ValueError('activations(train=True) needs rng=jax.random.key(...) for dropout.')
  layers = _activations(params, images, jax.random.key(0) if rng is None else rng, spec, train)
  return {name: layers[name] for name in model.ACTIVATIONS if name in layers}


def by_column(acts: dict, cfg) -> dict[str, list]:
  """`activations`' arrays split on their last (channel) axis into one per column, column 0
  first. fc8 (one layer over both columns) and a one-column network's layers stay whole: [x].
  """
  spec = model.Spec.from_config(_model_cfg(cfg))
  return {name: [x] if spec.columns == 1 or name == 'fc8' else
          list(jnp.split(x, spec.columns, axis=-1)) for name, x in acts.items()}


def exchanges(cfg, mesh, *, batch: int = 1, train: bool = False) -> list[dict]:
  """What the columns send each other in one forward pass over `mesh`, read off the jaxpr.

  Each entry: {'primitive', 'axes', 'shape' (what arrives, per device), 'before' (the layer
  that reads it, from the exchange's `jax.named_scope`)}, in program order. With the
  paper's network on a 1x2 mesh these are the all_gathers on 'model' before conv3, fc6 and
  fc7, and before fc8 the sum (psum) of the two columns' partial logits (Sec. 3.2).
  """
  from alexnet_jax import parallel  # pylint: disable=g-import-not-at-top
  spec = model.Spec.from_config(_model_cfg(cfg))
  layout = parallel.Layout(mesh, spec, batch_sizes=(batch,))
  forward = layout.forward(train=train)
  # Shapes only, placed as a run places them: nothing is computed or allocated.
  shapes = jax.eval_shape(lambda: model.init_params(jax.random.key(0), spec))
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes,
                        layout.param_shardings)
  images = jax.ShapeDtypeStruct((batch, spec.image_size, spec.image_size, 3), jnp.float32,
                                sharding=layout.batch_sharding)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=layout.replicated)
  jaxpr = jax.make_jaxpr(forward)(params, images, rng)
  found = []
  _collectives(jaxpr.jaxpr, found)
  return found


def reads_both(cfg) -> tuple[str, ...]:
  """The layers that read both columns' activations, in network order: where the columns
  exchange them (Sec. 3.2: conv3, fc6, fc7, fc8; LRN too when it runs across columns)."""
  spec = model.Spec.from_config(_model_cfg(cfg))
  if spec.columns == 1:
    return ()
  lrn = ('lrn1', 'lrn2') if spec.lrn and spec.lrn_across_columns else ()
  first_conv = next(name for name in ('conv3', 'conv4', 'conv5') if name != spec.remove_conv)
  return lrn + (first_conv, 'fc6', 'fc7', 'fc8')


# Collective primitives by name prefix (psum appears as psum_invariant under shard_map).
_COLLECTIVES = ('all_gather', 'all_to_all', 'psum', 'pmean', 'pmax', 'pmin', 'ppermute',
                'reduce_scatter')


def _collectives(jaxpr, found: list) -> None:
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name.startswith(_COLLECTIVES):
      axes = eqn.params.get('axis_name', eqn.params.get('axes'))
      scope = re.search(r'exchange_before_(\w+)', str(eqn.source_info.name_stack))
      found.append({'primitive': name, 'axes': tuple(axes) if isinstance(axes, (tuple, list))
                    else (axes,), 'shape': tuple(eqn.outvars[0].aval.shape),
                    'before': scope.group(1) if scope else None})
    for value in eqn.params.values():  # shard_map, jit, custom_vjp: the jaxprs inside.
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          _collectives(inner, found)


def _model_cfg(cfg):
  """The model config of a run config, or the model config (or Spec) itself."""
  if isinstance(cfg, ml_collections.ConfigDict) and 'model' in cfg:
    return cfg.model
  return cfg

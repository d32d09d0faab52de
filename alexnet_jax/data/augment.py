"""Sec. 4.1 on the host (tf.data): one function per operation, and the eval views.

Images given to the model are on the 0-255 scale minus the per-pixel training-set mean image
(Sec. 2). With `mean_patch='crop'` the mean is subtracted from the stored image before
cropping, so each crop loses the mean of its own window; with 'center' every crop and view
loses the mean image's centre crop instead, as the original code does (`mean_images`).

Ten-view order (`views='ten'`): top-left, top-right, bottom-left, bottom-right and centre
crops, then the horizontal reflections of those five in the same order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from alexnet_jax.data.spec import DataSpec, check_views
from alexnet_jax.data.statistics import Stats


def center_patch(mean_image: np.ndarray, crop: int) -> np.ndarray:
  """The central crop x crop window of the mean image (offset (size - crop) // 2)."""
  top = (mean_image.shape[0] - crop) // 2
  left = (mean_image.shape[1] - crop) // 2
  return np.asarray(mean_image[top:top + crop, left:left + crop], np.float32)


def mean_images(mean_image: np.ndarray, mean_patch: str, crop: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
  """(subtracted from the stored image, subtracted from each crop or view) for `mean_patch`.

  'crop': the whole mean image before cropping, so each crop loses its own window of it.
  'center': the mean image's centre crop from every crop and view, after any reflection.
  """
  size = mean_image.shape[0]
  if mean_patch == 'crop':
    return np.asarray(mean_image, np.float32), np.zeros([crop, crop, 3], np.float32)
  return np.zeros([size, size, 3], np.float32), center_patch(mean_image, crop)


def example_seeds(seed: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Stateless seeds of one use of one example, from (seed, epoch, example index):
  [3, 2] for the crop, the reflection and the lighting."""
  s = tf.constant([seed, 0x5EED], tf.int64)
  s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
  s = tf.random.experimental.stateless_fold_in(s, tf.cast(index, tf.int64))
  return tf.random.experimental.stateless_split(s, 3)


def random_offset(seed: tf.Tensor, size: int, crop: int) -> tf.Tensor:
  """(top, left), uniform over all (size - crop + 1)^2 offsets (33 x 33 for 224 of 256)."""
  return tf.random.stateless_uniform([2], seed, minval=0, maxval=size - crop + 1,
                                     dtype=tf.int32)


def crop_at(image: tf.Tensor, offset: tf.Tensor, crop: int) -> tf.Tensor:
  return tf.slice(image, [offset[0], offset[1], 0], [crop, crop, 3])


def draw_reflection(seed: tf.Tensor) -> tf.Tensor:
  """Whether to reflect: true with probability 1/2."""
  return tf.random.stateless_uniform([], seed) < 0.5


def reflect(image: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
  """The horizontal reflection of a [h, w, 3] image where `flip` is true."""
  return tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)


def lighting_shift(alpha: tf.Tensor, stats: Stats, lighting: str) -> tf.Tensor:
  """The RGB shift [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T on the 0-255 scale.

  alpha: [..., 3] draws of a_i ~ N(0, lighting_std).
  'paper': eigen-decomposition on [0, 1], the shift times 255.
  'original': the released code, a_i times 0-255 standard deviations. `add_lighting` then
    divides the whole centred image plus this shift by 1 + lighting_std, as that code does.
  """
  alpha = tf.convert_to_tensor(alpha, tf.float32)
  if lighting == 'paper':
    return 255.0 * tf.linalg.matvec(tf.constant(stats.eigvec), alpha * stats.eigval)
  if lighting == 'original':
    return tf.linalg.matvec(tf.constant(stats.original_eigvec), alpha * stats.original_stddev)
  if lighting == 'none':
    return tf.zeros_like(alpha)
  raise ValueError(f"config.data.lighting must be 'paper', 'original' or 'none'; got "
                   f'{lighting!r}.')


def draw_alpha(seed: tf.Tensor, lighting_std: float) -> tf.Tensor:
  """Sec. 4.1's a_i ~ N(0, lighting_std), drawn once per image (not per pixel)."""
  return tf.random.stateless_normal([3], seed, stddev=lighting_std)


def add_lighting(image: tf.Tensor, alpha: tf.Tensor, stats: Stats, lighting: str,
                 lighting_std: float) -> tf.Tensor:
  """Sec. 4.1's PCA lighting: one RGB shift over the whole centred image."""
  if lighting == 'none' or lighting_std <= 0:
    return image
  image = image + lighting_shift(alpha, stats, lighting)
  if lighting == 'original':
    # The released code (cuda-convnet2 convdata.py) scales the centred image plus the noise
    # by 1 / (1 + color_noise), 1/1.1, "so that the overall scale of the training data
    # doesn't become too different from the test data"; test images are not scaled.
    image = image / (1.0 + lighting_std)
  return image


def apply_augment(image: tf.Tensor, offset: tf.Tensor, flip: tf.Tensor, alpha: tf.Tensor, *,
                  spec: DataSpec, stats: Stats) -> tf.Tensor:
  """The stored float32 image, given its crop offset, reflection and lighting draws ->
  the centred (`mean_images`) crop, reflected, with lighting, times `input_scale`."""
  image_mean, view_mean = mean_images(stats.mean_image, spec.mean_patch, spec.crop_size)
  image = crop_at(image - image_mean, offset, spec.crop_size)
  if spec.flip:
    image = reflect(image, flip)
  image = add_lighting(image - view_mean, alpha, stats, spec.lighting, spec.lighting_std)
  return image * spec.input_scale


def augment(image: tf.Tensor, epoch: tf.Tensor, index: tf.Tensor, *, spec: DataSpec,
            stats: Stats, seed: int) -> tf.Tensor:
  """One training image: the stored float32 image -> Sec. 4.1's random crop, reflection and
  lighting, each drawn from (seed, epoch, example index), then `apply_augment`."""
  crop_seed, flip_seed, light_seed = tf.unstack(example_seeds(seed, epoch, index))
  offset = random_offset(crop_seed, spec.stored_size, spec.crop_size)
  return apply_augment(image, offset, draw_reflection(flip_seed),
                       draw_alpha(light_seed, spec.lighting_std), spec=spec, stats=stats)


def eval_views(image: tf.Tensor, crop: int, views: str) -> tf.Tensor:
  """[V, crop, crop, 3] views of a (mean-subtracted) square image; order in module doc."""
  check_views(views)
  size = image.shape[0]
  far, mid = size - crop, (size - crop) // 2
  window = lambda t, l: image[t:t + crop, l:l + crop, :]
  if views == 'center':
    return window(mid, mid)[None]
  five = tf.stack([window(0, 0), window(0, far), window(far, 0), window(far, far),
                   window(mid, mid)])
  return tf.concat([five, tf.reverse(five, [2])], axis=0)


def eval_image(image: tf.Tensor, *, spec: DataSpec, stats: Stats, views: str) -> tf.Tensor:
  """The stored float32 image -> its [V, crop, crop, 3] centred views, times input_scale."""
  image_mean, view_mean = mean_images(stats.mean_image, spec.mean_patch, spec.crop_size)
  return (eval_views(image - image_mean, spec.crop_size, views) - view_mean) * spec.input_scale

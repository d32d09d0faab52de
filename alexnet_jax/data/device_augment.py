"""Sec. 4.1 inside the jitted train step (`config.data.augment_on='device'`).

The host then ships each example's uint8 stored image (256x256x3: a third of the bytes of a
float32 224 crop, and no per-pixel work) with its (epoch, index); the step draws the crop
offset, the reflection and the lighting from keys folded from (seed, epoch, index), so a
resumed run, or a run on another number of processes, sees the same inputs. The operations
are those of `augment` (same order, same mean patch from `augment.mean_images`), in JAX.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.data.augment import mean_images
from alexnet_jax.data.spec import DataSpec, check_views
from alexnet_jax.data.statistics import Stats


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceAugment:
  """The constants of Sec. 4.1 and Sec. 2 for the step; call it on a batch."""
  seed: int
  size: int
  crop: int
  flip: bool
  lighting: str
  lighting_std: float
  input_scale: float
  image_mean: np.ndarray  # [size, size, 3]: subtracted before cropping ('crop' mean patch).
  view_mean: np.ndarray  # [crop, crop, 3]: subtracted from each crop ('center').
  eigvec: np.ndarray  # [3, 3] columns p_i of the lighting's eigen-decomposition.
  scales: np.ndarray  # [3]: shift = eigvec @ (alpha * scales) on the 0-255 scale.

  @classmethod
  def from_spec(cls, spec: DataSpec, stats: Stats, seed: int) -> 'DeviceAugment':
    image_mean, view_mean = mean_images(stats.mean_image, spec.mean_patch, spec.crop_size)
    if spec.lighting == 'original':  # a_i times the 0-255 standard deviations.
      eigvec, scales = stats.original_eigvec, stats.original_stddev
    else:  # 'paper': the [0, 1] eigenvalues, times 255 ('none' draws no lighting).
      eigvec, scales = stats.eigvec, 255.0 * np.asarray(stats.eigval)
    as32 = lambda x: np.asarray(x, np.float32)
    return cls(seed, spec.stored_size, spec.crop_size, spec.flip, spec.lighting,
               spec.lighting_std, spec.input_scale, as32(image_mean), as32(view_mean),
               as32(eigvec), as32(scales))

  @property
  def has_lighting(self) -> bool:
    return self.lighting != 'none' and self.lighting_std > 0

  # ----------------------------------------------------------------- one example

  def draw(self, epoch: jax.Array, index: jax.Array):
    """(offset [2] int32 (top, left), flip bool, alpha [3]) of one use of one example."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), epoch), index)
    crop_key, flip_key, light_key = jax.random.split(key, 3)
    # Uniform over all (size - crop + 1)^2 offsets (33 x 33 for 224 of 256).
    offset = jax.random.randint(crop_key, [2], 0, self.size - self.crop + 1)
    flip = jax.random.bernoulli(flip_key) if self.flip else jnp.zeros([], bool)
    alpha = self.lighting_std * jax.random.normal(light_key, [3], jnp.float32)
    return offset, flip, alpha

  def lighting_shift(self, alpha: jax.Array) -> jax.Array:
    """[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T on the 0-255 scale (`augment.lighting_shift`)."""
    return jnp.dot(self.eigvec, alpha * self.scales, precision=jax.lax.Precision.HIGHEST)

  def apply(self, image: jax.Array, offset: jax.Array, flip: jax.Array,
            alpha: jax.Array) -> jax.Array:
    """A uint8 [size, size, 3] stored image -> its centred crop, reflected if `flip`, with
    the lighting shift of `alpha`, times input_scale: float32 [crop, crop, 3]."""
    x = image.astype(jnp.float32) - self.image_mean
    x = jax.lax.dynamic_slice(x, (offset[0], offset[1], 0), (self.crop, self.crop, 3))
    if self.flip:
      x = jnp.where(flip, x[:, ::-1], x)
    x = x - self.view_mean
    if self.has_lighting:
      x = x + self.lighting_shift(alpha)
      if self.lighting == 'original':  # The released code's 1 / (1 + lighting_std).
        x = x / (1.0 + self.lighting_std)
    return x * self.input_scale

  # ----------------------------------------------------------------------- batches

  def __call__(self, images: jax.Array, epoch: jax.Array, index: jax.Array) -> jax.Array:
    """uint8 [B, size, size, 3] with each example's epoch and index [B] -> float32
    [B, crop, crop, 3] training inputs."""
    offset, flip, alpha = jax.vmap(self.draw)(epoch, index)
    return jax.vmap(self.apply)(images, offset, flip, alpha)

  def views(self, images: jax.Array, views: str) -> jax.Array:
    """uint8 [B, size, size, 3] -> the [B, V, crop, crop, 3] centred eval views."""
    return eval_views(images, self.image_mean, self.view_mean, views=views, crop=self.crop,
                      input_scale=self.input_scale)


def eval_views(images: jax.Array, image_mean: jax.Array, view_mean: jax.Array, *, views: str,
               crop: int, input_scale: float) -> jax.Array:
  """uint8 [B, size, size, 3] -> the [B, V, crop, crop, 3] centred views of
  `augment.eval_views`, in its order, times input_scale. The means (`augment.mean_images`)
  are arguments, so one compiled eval step serves every evaluation of a run."""
  check_views(views)
  x = images.astype(jnp.float32) - image_mean
  size = images.shape[1]
  far, mid = size - crop, (size - crop) // 2
  corners = [(mid, mid)] if views == 'center' else [(0, 0), (0, far), (far, 0), (far, far),
                                                    (mid, mid)]
  out = jnp.stack([x[:, t:t + crop, l:l + crop] for t, l in corners], axis=1)
  if views == 'ten':
    out = jnp.concatenate([out, out[:, :, :, ::-1]], axis=1)
  return (out - view_mean) * input_scale

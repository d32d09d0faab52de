"""Sec. 2: an encoded image (JPEG, PNG, BMP, GIF) to the stored size x size image."""

import tensorflow as tf

# TF is only the input pipeline here: keep it off every accelerator so it never takes the
# memory JAX needs.
tf.config.set_visible_devices([], 'GPU')
try:
  tf.config.set_visible_devices([], 'TPU')
except (ValueError, RuntimeError):  # No TPU device type registered in this TF build.
  pass


def decode(encoded: tf.Tensor) -> tf.Tensor:
  """Any JPEG/PNG/BMP/GIF as uint8 [h, w, 3]: grayscale is repeated to RGB, CMYK JPEGs are
  converted by libjpeg, and the format is read from the bytes, not the file name."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


# libjpeg decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, skipping most of the inverse
# DCT and colour conversion, and the resample then starts from fewer pixels.
DCT_SCALES = (2, 4, 8)


def decode_at_least(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """`decode`, except that a JPEG whose shorter side is at least twice `size` is decoded by
  libjpeg at the smallest 1/2, 1/4 or 1/8 scale that keeps that side >= `size`.

  Only photographs larger than 2 x 256 on their shorter side change (ImageNet's median,
  500x375, does not): each decodes 1.3-1.9x faster and resamples from 4-16x fewer pixels,
  and the stored image moves by about one grey level on average (docs/data.md, "Decoding").
  """
  def scaled():
    shape = tf.image.extract_jpeg_shape(encoded)
    shorter = tf.minimum(shape[0], shape[1])
    # How many of 2, 4, 8 keep the decoded shorter side (ceil(shorter / r)) >= size.
    k = tf.reduce_sum(tf.cast(shorter // tf.constant(DCT_SCALES) >= size, tf.int32))
    branches = [lambda: decode(encoded)] + [
        lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in DCT_SCALES]
    return tf.switch_case(k, branches)

  return tf.cond(tf.io.is_jpeg(encoded), scaled, lambda: decode(encoded))


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Sec. 2: shorter side to `size`, then the central size x size patch; float32 0-255."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]

  def resize():
    scale = tf.cast(size, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
    # Antialiased bilinear: shrinking widens the triangle filter to the scale, so no
    # aliasing; exact on linear content away from the borders. (tf's 'area' is 2x
    # cheaper but off by up to 5% of a step at non-integer scales; `prepare` makes the
    # cost a one-off anyway.)
    return tf.image.resize(image, [new_h, new_w], method='bilinear', antialias=True)

  # Images already stored at the right shorter side (prepared data) skip the resample.
  image = tf.cond(tf.minimum(h, w) == size, lambda: tf.cast(image, tf.float32), resize)
  shape = tf.shape(image)
  top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
  return image[top:top + size, left:left + size, :]


def decode_stored(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """Encoded image -> the stored size x size float32 image of Sec. 2 (mean not removed)."""
  image = decode_at_least(encoded, size)
  image.set_shape([None, None, 3])
  image = resize_and_center_crop(image, size)
  image.set_shape([size, size, 3])
  return image


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """A float32 0-255 stored image rounded to the uint8 a store (or the device) receives."""
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def decode_stored_uint8(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """Encoded image -> the stored size x size uint8 image (what `augment_on='device'` ships):
  an image stored at that size already (a prepared copy) is passed on as decoded."""
  image = decode_at_least(encoded, size)
  image.set_shape([None, None, 3])
  shape = tf.shape(image)
  image = tf.cond(tf.logical_and(shape[0] == size, shape[1] == size), lambda: image,
                  lambda: to_uint8(resize_and_center_crop(image, size)))
  image.set_shape([size, size, 3])
  return image

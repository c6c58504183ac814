"""The one pixel convention of both GANs: uint8 images as float32 in [-1, 1] (0 -> -1, 255 -> 1).

IF-GAN and DECGAN read and write images through these functions, so the same image is the same
array to both. The flows read images dequantised to [-0.5, 0.5) (`objectives.dequantize`, bin
centres without noise); `from_flow_range` brings such an image to the same [-1, 1] values, for a GAN
scored by the flows' evaluation.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def from_uint8(images: Array) -> Array:
  """uint8 images as float32 in [-1, 1]."""
  return jnp.asarray(images).astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: Array) -> Array:
  """Images in [-1, 1] as uint8, rounded to the nearest level and clipped."""
  return jnp.clip(jnp.round((jnp.asarray(images) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def from_flow_range(x: Array) -> Array:
  """The flows' bin-centre images (v + 0.5) / 256 - 0.5 of uint8 v, as `from_uint8(v)`."""
  return from_uint8((x + 0.5) * 256.0 - 0.5)

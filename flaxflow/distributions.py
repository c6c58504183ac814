"""Learned Gaussian priors of the multi-scale flows.

`SplitPrior` is the prior of the half of the channels that a level splits off, conditioned on the
half that goes on (Glow's learned prior); `TopPrior` is the prior of the deepest latent, a learned
mean and scale map. Both become class-conditional when given a one-hot label: the label adds a
learned per-class offset map (every position and channel) to the mean and log-scale: a per-channel
offset broadcast over H and W, Glow's choice, cannot say where a class differs, and expressions
differ in places (the mouth corners, the brows). Every output layer starts at zero, so at
initialisation every prior is a standard normal.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxflow.bijectors.base import sum_except_batch
from flaxflow.conv import Conv

Array = jax.Array


def gaussian_log_prob(z: Array, mean: Array, log_scale: Array) -> Array:
  """Per-example log N(z; mean, exp(log_scale)^2), summed over all but the batch axis."""
  z, mean, log_scale = (a.astype(jnp.float32) for a in (z, mean, log_scale))
  standardized = (z - mean) * jnp.exp(-log_scale)
  log_density = -0.5 * (np.log(2 * np.pi) + 2.0 * log_scale + standardized ** 2)
  return sum_except_batch(log_density)


def gaussian_sample(rng: Array, mean: Array, log_scale: Array, temperature: float) -> Array:
  """A sample of N(mean, (temperature * exp(log_scale))^2)."""
  noise = jax.random.normal(rng, mean.shape, jnp.float32)
  return mean + temperature * jnp.exp(log_scale) * noise


def _add_label_offset(stats: Array, cond: Optional[Array]) -> Array:
  """Adds a learned per-class offset of every position and channel of `stats` (B, H, W, C)."""
  if cond is None:
    return stats
  offset = nn.Dense(int(np.prod(stats.shape[1:])), kernel_init=nn.initializers.zeros,
                    name="label_offset")(cond.astype(jnp.float32))
  return stats + offset.reshape(stats.shape)


class SplitPrior(nn.Module):
  """p(z | h, y): mean and log-scale of z from a zero-initialised 3x3 conv of h (plus the label)."""

  @nn.compact
  def __call__(self, h: Array, cond: Optional[Array] = None) -> Tuple[Array, Array]:
    stats = Conv(2 * h.shape[-1], (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                 name="conv")(h.astype(jnp.float32))
    stats = _add_label_offset(stats, cond)
    mean, log_scale = jnp.split(stats, 2, axis=-1)
    return mean, log_scale


class TopPrior(nn.Module):
  """p(z | y) for the deepest latent: a learned mean and log-scale per position and channel.

  `latent_shape` (H, W, C) is fixed at construction because sampling needs it without any input.
  """

  latent_shape: Tuple[int, int, int]

  @nn.compact
  def __call__(self, batch_size: int, cond: Optional[Array] = None) -> Tuple[Array, Array]:
    height, width, channels = self.latent_shape
    stats = self.param("mean_and_log_scale", nn.initializers.zeros, (height, width, 2 * channels))
    stats = jnp.broadcast_to(stats, (batch_size, height, width, 2 * channels))
    stats = _add_label_offset(stats, cond)
    mean, log_scale = jnp.split(stats, 2, axis=-1)
    return mean, log_scale

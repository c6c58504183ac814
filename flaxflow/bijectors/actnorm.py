"""Activation normalisation (Glow): a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.bijectors.base import Bijector, per_pixel_log_det

Array = jax.Array


class ActNorm(Bijector):
  """y = (x + bias) * exp(log_scale), per channel.

  The parameters are set from the batch given to ``init`` (in the forward direction) so that
  the output has zero mean and unit variance per channel. A channel whose standard deviation in
  that batch is at most ``eps`` carries no scale information; it is only centred (scale 1)
  rather than multiplied by a huge factor.

  Attributes:
    eps: standard deviations at or below this count as zero at initialisation.
  """

  eps: float = 1e-6

  @nn.compact
  def _log_scale_and_bias(self, x: Array) -> Tuple[Array, Array]:
    x = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))

    def init_bias(_, shape, dtype):
      return -jnp.mean(x, axis=axes).astype(dtype).reshape(shape)

    def init_log_scale(_, shape, dtype):
      std = jnp.std(x, axis=axes)
      log_scale = jnp.where(std > self.eps, -jnp.log(jnp.maximum(std, self.eps)), 0.0)
      return log_scale.astype(dtype).reshape(shape)

    channels = x.shape[-1]
    log_scale = self.param("log_scale", init_log_scale, (channels,), jnp.float32)
    bias = self.param("bias", init_bias, (channels,), jnp.float32)
    return log_scale, bias

  def forward_and_log_det(self, x, cond=None):
    log_scale, bias = self._log_scale_and_bias(x)
    y = (x + bias) * jnp.exp(log_scale)
    return y, per_pixel_log_det(x, jnp.sum(log_scale))

  def inverse_and_log_det(self, y, cond=None):
    log_scale, bias = self._log_scale_and_bias(y)
    x = y * jnp.exp(-log_scale) - bias
    return x, -per_pixel_log_det(y, jnp.sum(log_scale))

"""Glow's affine coupling: half the channels scaled and shifted by a function of the other half."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.bijectors.base import Bijector, sum_except_batch
from flaxflow.bijectors.nets import CouplingNet

Array = jax.Array


class AffineCoupling(Bijector):
  """x = [x_a, x_b] -> [x_a, (x_b + shift) * scale] with (shift, scale) from g(x_a, cond).

  scale = sigmoid(raw + 2) lies in (0, 1) and starts near 0.88 (Glow's bounded scale). With an
  odd channel count x_a has the smaller half.

  Attributes:
    width: hidden channels of g.
    kernel_sizes: kernel size of each convolution of g; Glow's (3, 1, 3) by default.
    additive: shift only (NICE-style): scale is 1 and the log-det 0.
    dtype: computation dtype of g (e.g. jnp.bfloat16); scales and log-dets stay float32.
  """

  width: int = 512
  kernel_sizes: Sequence[int] = (3, 1, 3)
  additive: bool = False
  dtype: Any = jnp.float32

  def _split(self, x: Array) -> Tuple[Array, Array]:
    channels = x.shape[-1]
    if channels < 2:
      raise ValueError(f"AffineCoupling needs at least 2 channels, got an input of shape {x.shape}")
    return x[..., :channels // 2], x[..., channels // 2:]

  @nn.compact
  def _shift_and_log_scale(self, x_a: Array, out_channels: int,
                           cond: Optional[Array]) -> Tuple[Array, Array]:
    outputs_per_channel = 1 if self.additive else 2
    h = CouplingNet(outputs_per_channel * out_channels, self.width, self.kernel_sizes,
                    dtype=self.dtype, name="g")(x_a, cond)
    if self.additive:
      return h, jnp.zeros_like(h)
    shift, raw_scale = jnp.split(h, 2, axis=-1)
    return shift, jax.nn.log_sigmoid(raw_scale + 2.0)

  def forward_and_log_det(self, x, cond=None):
    x_a, x_b = self._split(x)
    shift, log_scale = self._shift_and_log_scale(x_a, x_b.shape[-1], cond)
    y_b = (x_b + shift) * jnp.exp(log_scale)
    return jnp.concatenate([x_a, y_b.astype(x.dtype)], axis=-1), sum_except_batch(log_scale)

  def inverse_and_log_det(self, y, cond=None):
    y_a, y_b = self._split(y)
    shift, log_scale = self._shift_and_log_scale(y_a, y_b.shape[-1], cond)
    x_b = y_b * jnp.exp(-log_scale) - shift
    return jnp.concatenate([y_a, x_b.astype(y.dtype)], axis=-1), -sum_except_batch(log_scale)

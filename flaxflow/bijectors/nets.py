"""The coupling network g shared by `AffineCoupling` and `BiParallelLinear`.

A stack of convolutions with ReLU between them; the last convolution starts at zero so that a
coupling is the identity at initialisation. The convolutions are `flaxflow.conv.Conv`, which
trains several times faster than `flax.linen.Conv` on CPU and is the same elsewhere. They
compute in ``dtype`` (e.g. bfloat16 on GPU/TPU) with float32 parameters; the output is always
float32, so scales and log-dets that are derived from it stay in float32.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.conv import Conv

Array = jax.Array


class ZeroConv(nn.Module):
  """Glow's zero-initialised output convolution, scaled by exp(logscale_factor * logs)."""

  features: int
  kernel_size: int = 3
  logscale_factor: float = 3.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = Conv(self.features, (self.kernel_size, self.kernel_size), padding="SAME",
             kernel_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32)(x)
    logs = self.param("logs", nn.initializers.zeros, (self.features,), jnp.float32)
    return h.astype(jnp.float32) * jnp.exp(self.logscale_factor * logs)


class CouplingNet(nn.Module):
  """conv(k_1) -> ReLU -> ... -> conv(k_{n-1}) -> ReLU -> zero conv(k_n).

  Attributes:
    out_channels: channels of the output.
    width: channels of every hidden layer.
    kernel_sizes: one (square) kernel size per convolution, the last one being the zero conv.
      Glow uses (3, 1, 3); BPLF's g uses (3, 3, 3) or (3, 1, 3).
    cond_features: channels a rank-2 ``cond`` (e.g. a one-hot label) is projected to with a
      Dense layer before being broadcast over H, W and concatenated to the input.
    dtype: computation dtype of the convolutions; parameters and the output are float32.
  """

  out_channels: int
  width: int = 512
  kernel_sizes: Sequence[int] = (3, 1, 3)
  cond_features: int = 8
  dtype: Any = jnp.float32

  def _with_condition(self, x: Array, cond: Optional[Array]) -> Array:
    """Appends ``cond`` to ``x`` as extra channels: rank 2 projected and broadcast, rank 4 as is."""
    if cond is None:
      return x
    if cond.ndim == 2:
      if cond.shape[0] != x.shape[0]:
        raise ValueError(f"cond of shape {cond.shape} has a batch size different from the "
                         f"input's {x.shape}")
      projected = nn.Dense(self.cond_features, dtype=self.dtype, param_dtype=jnp.float32,
                           name="cond_projection")(cond.astype(self.dtype))
      cond_map = jnp.broadcast_to(projected[:, None, None, :],
                                  x.shape[:3] + (self.cond_features,))
    elif cond.ndim == 4:
      if cond.shape[:3] != x.shape[:3]:
        raise ValueError(f"a spatial cond must have shape (batch, H, W, c) with (batch, H, W) = "
                         f"{x.shape[:3]}, got cond of shape {cond.shape}")
      cond_map = cond
    else:
      raise ValueError(f"cond must be (batch, n_classes) or (batch, H, W, c), got shape "
                       f"{cond.shape}")
    return jnp.concatenate([x, cond_map.astype(x.dtype)], axis=-1)

  @nn.compact
  def __call__(self, x: Array, cond: Optional[Array] = None) -> Array:
    if len(self.kernel_sizes) < 1:
      raise ValueError(f"kernel_sizes needs at least one entry, got {self.kernel_sizes}")
    h = self._with_condition(x.astype(self.dtype), cond)
    for kernel_size in self.kernel_sizes[:-1]:
      h = Conv(self.width, (kernel_size, kernel_size), padding="SAME", dtype=self.dtype,
               param_dtype=jnp.float32)(h)
      h = nn.relu(h)
    return ZeroConv(self.out_channels, self.kernel_sizes[-1], dtype=self.dtype)(h)

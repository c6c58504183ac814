"""SVD truncation of images (BPLF's pre-processing before the first squeeze).

Each channel of each image is an H x W matrix; truncation keeps its largest singular values and
reconstructs it from them, dropping fine detail and noise. This is a lossy projection, not a
bijection: it has no inverse and no log-det, and belongs in front of a flow, not inside one.
"""

from __future__ import annotations

import numbers
from typing import Optional, Union

import jax
import jax.numpy as jnp

Array = jax.Array


def _energy_mask(singular_values: Array, energy: Union[float, Array]) -> Array:
  """Keeps the largest singular values until they hold ``energy`` of sum(s^2), the last included."""
  squared = jnp.square(singular_values)
  energy_before = jnp.cumsum(squared, axis=-1) - squared
  return energy_before < energy * jnp.sum(squared, axis=-1, keepdims=True)


def svd_truncate(images: Array, rank: Optional[int] = None,
                 energy: Optional[Union[float, Array]] = None) -> Array:
  """Reconstructs every channel of NHWC ``images`` from its top singular values.

  Give exactly one of:
    rank: keep the ``rank`` largest singular values (a Python int, static under ``jit``);
      rank >= min(H, W) returns the images unchanged (up to rounding).
    energy: keep the fewest largest singular values whose squares hold at least this fraction
      of the channel's spectral energy, in (0, 1]; may be a traced scalar.

  Returns float32 images of the input's shape.
  """
  if (rank is None) == (energy is None):
    raise ValueError(f"svd_truncate needs exactly one of rank and energy, got rank={rank!r}, "
                     f"energy={energy!r}")
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4:
    raise ValueError(f"svd_truncate expects NHWC images, got an array of shape {images.shape}")
  # (B, H, W, C) -> (B, C, H, W): one H x W matrix per image channel.
  matrices = jnp.moveaxis(images, -1, 1)
  u, s, vt = jnp.linalg.svd(matrices, full_matrices=False)
  if rank is not None:
    if not isinstance(rank, numbers.Integral) or rank < 1:
      raise ValueError(f"rank must be a positive Python int, got {rank!r}")
    keep = jnp.arange(s.shape[-1]) < rank
  else:
    if isinstance(energy, numbers.Real) and not 0.0 < energy <= 1.0:
      raise ValueError(f"energy must lie in (0, 1], got {energy!r}")
    keep = _energy_mask(s, energy)
  truncated = jnp.einsum("...ik,...k,...kj->...ij", u, jnp.where(keep, s, 0.0), vt,
                         precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(truncated, 1, -1)

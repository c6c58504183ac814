"""The bijector protocol shared by every invertible layer, and `Chain`.

A bijector is a `flax.linen.Module` with two methods:

* ``forward_and_log_det(x, cond=None) -> (y, log_det)``
* ``inverse_and_log_det(y, cond=None) -> (x, log_det)``

Inputs are NHWC images; ``log_det`` has shape ``(batch,)`` and dtype float32. The forward
log-det is log|det dy/dx|, the inverse one log|det dx/dy| (minus the forward's at the matching
point). ``cond`` is an optional per-example conditioning tensor, e.g. a one-hot label
``(batch, n_classes)``; bijectors that do not use it accept and ignore it so that they can be
chained freely.

Trained variables live in the ``params`` collection and fixed, never-trained tensors (e.g. a
permutation) in ``constants``, so an optimizer only ever sees ``params``. Every bijector is a
pure function of ``(variables, input)``:
``module.apply(variables, x, method="forward_and_log_det")``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def zero_log_det(x: Array) -> Array:
  """A float32 log-det of zeros for a batch ``x``."""
  return jnp.zeros(x.shape[:1], jnp.float32)


def per_pixel_log_det(x: Array, pixel_log_det: Array) -> Array:
  """The log-det of a map applied identically at every pixel of ``x``: H * W * ``pixel_log_det``."""
  height, width = x.shape[1:3]
  return jnp.full(x.shape[:1], height * width * pixel_log_det, jnp.float32)


def sum_except_batch(x: Array) -> Array:
  """Sums every axis but the first, accumulating in float32."""
  return jnp.sum(x.astype(jnp.float32).reshape(x.shape[0], -1), axis=-1)


class Bijector(nn.Module):
  """Base class: subclasses implement both directions."""

  def forward_and_log_det(self, x: Array, cond: Optional[Array] = None) -> Tuple[Array, Array]:
    raise NotImplementedError(f"{type(self).__name__} must implement forward_and_log_det")

  def inverse_and_log_det(self, y: Array, cond: Optional[Array] = None) -> Tuple[Array, Array]:
    raise NotImplementedError(f"{type(self).__name__} must implement inverse_and_log_det")

  def __call__(self, x: Array, cond: Optional[Array] = None) -> Tuple[Array, Array]:
    return self.forward_and_log_det(x, cond)

  def forward(self, x: Array, cond: Optional[Array] = None) -> Array:
    return self.forward_and_log_det(x, cond)[0]

  def inverse(self, y: Array, cond: Optional[Array] = None) -> Array:
    return self.inverse_and_log_det(y, cond)[0]


class Chain(Bijector):
  """Applies ``bijectors`` in order; the inverse applies their inverses in reverse order."""

  bijectors: Sequence[Bijector]

  def forward_and_log_det(self, x, cond=None):
    log_det = zero_log_det(x)
    for bijector in self.bijectors:
      x, step_log_det = bijector.forward_and_log_det(x, cond)
      log_det = log_det + step_log_det
    return x, log_det

  def inverse_and_log_det(self, y, cond=None):
    log_det = zero_log_det(y)
    for bijector in reversed(self.bijectors):
      y, step_log_det = bijector.inverse_and_log_det(y, cond)
      log_det = log_det + step_log_det
    return y, log_det

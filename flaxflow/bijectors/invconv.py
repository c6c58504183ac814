"""Invertible 1x1 convolution (Glow): a learned C x C channel mixing applied at every pixel."""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.bijectors.base import Bijector, per_pixel_log_det

Array = jax.Array

# The matrix is small and exact invertibility matters more than speed here; TF32 or bfloat16
# passes on GPU/TPU would make inverse(forward(x)) drift.
_PRECISION = jax.lax.Precision.HIGHEST


def _random_lu(key: Array, channels: int) -> dict:
  """The P, L, U factors of a random orthogonal matrix, U's diagonal split into sign and log."""
  weight = nn.initializers.orthogonal()(key, (channels, channels), jnp.float32)
  permutation, lower, upper = jax.scipy.linalg.lu(weight)
  diagonal = jnp.diag(upper)
  return {"permutation": permutation, "lower": lower, "upper": jnp.triu(upper, k=1),
          "sign_s": jnp.sign(diagonal), "log_abs_s": jnp.log(jnp.abs(diagonal))}


class InvertibleConv1x1(Bijector):
  """y[b, h, w] = W x[b, h, w] with W a C x C matrix initialised as a random orthogonal one.

  With ``use_lu=True`` (default), W = P L (U + diag(sign_s * exp(log_abs_s))) with P a fixed
  permutation, L unit lower triangular and U strictly upper triangular: W is invertible by
  construction and its log|det| is sum(log_abs_s). P and sign_s live in the ``constants``
  collection, the rest in ``params``.

  With ``use_lu=False``, W is a plain ``params`` matrix and the log-det comes from
  ``jnp.linalg.slogdet``. Nothing keeps it invertible: if training makes W singular, the
  log-det is -inf (zero density; hugely negative if singular only up to rounding) and the
  inverse returns non-finite values; neither is hidden.

  Attributes:
    use_lu: learn W through its LU decomposition rather than as a plain matrix.
  """

  use_lu: bool = True

  @nn.compact
  def _weights(self, channels: int) -> Tuple[Array, Array, Array]:
    """(W, W^-1, log|det W|); under jit whichever goes unused is not computed."""
    if not self.use_lu:
      weight = self.param("kernel", nn.initializers.orthogonal(), (channels, channels),
                          jnp.float32)
      return weight, jnp.linalg.inv(weight), jnp.linalg.slogdet(weight)[1]
    # Every factor derives from one random matrix, so all initialisers share one key. Outside
    # init, Flax still traces initialisers to check shapes; any key serves for that.
    key = self.make_rng("params") if self.is_initializing() else jax.random.key(0)

    def factor(name):
      return lambda *_: _random_lu(key, channels)[name]

    permutation = self.variable("constants", "permutation", factor("permutation")).value
    sign_s = self.variable("constants", "sign_s", factor("sign_s")).value
    lower = self.param("lower", factor("lower"))
    upper = self.param("upper", factor("upper"))
    log_abs_s = self.param("log_abs_s", factor("log_abs_s"))
    lower = jnp.tril(lower, k=-1) + jnp.eye(channels)
    upper = jnp.triu(upper, k=1) + jnp.diag(sign_s * jnp.exp(log_abs_s))
    weight = jnp.matmul(permutation, jnp.matmul(lower, upper, precision=_PRECISION),
                        precision=_PRECISION)
    # W^-1 = U^-1 L^-1 P^T: two triangular solves of a C x C system.
    lower_inv_pt = jax.scipy.linalg.solve_triangular(lower, permutation.T, lower=True,
                                                      unit_diagonal=True)
    inverse = jax.scipy.linalg.solve_triangular(upper, lower_inv_pt, lower=False)
    return weight, inverse, jnp.sum(log_abs_s)

  def _mix_channels(self, x: Array, weight: Array) -> Array:
    return jnp.einsum("bhwc,dc->bhwd", x.astype(jnp.float32), weight, precision=_PRECISION)

  def forward_and_log_det(self, x, cond=None):
    weight, _, log_abs_det = self._weights(x.shape[-1])
    return self._mix_channels(x, weight), per_pixel_log_det(x, log_abs_det)

  def inverse_and_log_det(self, y, cond=None):
    _, inverse, log_abs_det = self._weights(y.shape[-1])
    return self._mix_channels(y, inverse), -per_pixel_log_det(y, log_abs_det)

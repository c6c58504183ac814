"""Dequantisation, bits per dimension, and the training losses of the flow models.

Images are n-bit integers k in [0, 2**n_bits); a flow models continuous x = (k + u) / n_bins - 0.5 with
u ~ U[0, 1)^D (uniform dequantisation), so the discrete log-likelihood is bounded below by
log p(x) - D log n_bins and bits/dim = -(log p(x) - D log n_bins) / (D ln 2).
"""

from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SUPPORTED_N_BITS = tuple(range(1, 9))


def _check_n_bits(n_bits: int) -> int:
  if n_bits not in SUPPORTED_N_BITS:
    raise ValueError(f"n_bits={n_bits}: expected an integer from 1 to 8")
  return 2 ** n_bits


def quantize(images: Array, n_bits: int) -> Array:
  """uint8 images reduced to their top `n_bits` bits, as integers in [0, 2**n_bits)."""
  _check_n_bits(n_bits)
  return jnp.asarray(images).astype(jnp.int32) >> (8 - n_bits)


def dequantize(rng: Optional[Array], images: Array, n_bits: int = 8) -> Array:
  """uint8 images -> continuous float32 x in [-0.5, 0.5); `rng=None` uses the bin centres."""
  n_bins = _check_n_bits(n_bits)
  bins = quantize(images, n_bits).astype(jnp.float32)
  noise = 0.5 if rng is None else jax.random.uniform(rng, bins.shape, jnp.float32)
  return (bins + noise) / n_bins - 0.5


def postprocess(x: Array, n_bits: int = 8) -> Array:
  """Continuous x in [-0.5, 0.5) -> uint8 images (the bin of each value, back in 8-bit range)."""
  n_bins = _check_n_bits(n_bits)
  bins = jnp.clip(jnp.floor((x.astype(jnp.float32) + 0.5) * n_bins), 0, n_bins - 1)
  return (bins * (256 // n_bins)).astype(jnp.uint8)


def bits_per_dim(log_prob: Array, num_dims: int, n_bits: int = 8) -> Array:
  """Bits per dimension of discrete data from the log-density (nats) of its dequantised version."""
  n_bins = _check_n_bits(n_bits)
  return -(log_prob - num_dims * np.log(n_bins)) / (num_dims * np.log(2.0))


def loss_and_metrics(model: nn.Module, variables, images: Array, labels: Optional[Array],
                     rng: Optional[Array], *, n_bits: int = 8,
                     class_loss_weight: float = 0.3) -> Tuple[Array, Dict[str, Array]]:
  """The training loss of `model` on a batch of uint8 images, and scalar metrics.

  Flows: the mean bits/dim (the negative log-likelihood, scaled per dimension). The classifier:
  L_cond + class_loss_weight * L_class, with L_cond = -log p(x|y) in bits/dim and L_class the cross
  entropy of the class logits log p(x|y=i) + log p(y=i) (paper eq. 3-6).
  """
  x = dequantize(rng, images, n_bits)
  num_dims = int(np.prod(x.shape[1:]))
  if not model.is_classifier:
    log_prob = model.apply(variables, x, model.conditioning_labels(labels), method="log_prob")
    bpd = jnp.mean(bits_per_dim(log_prob, num_dims, n_bits))
    return bpd, {"loss": bpd, "bits_per_dim": bpd}
  log_likelihoods = model.apply(variables, x, method="class_log_likelihoods")
  log_prior = model.apply(variables, method="class_log_prior")
  logits = log_likelihoods + log_prior
  true_log_likelihood = jnp.take_along_axis(log_likelihoods, labels[:, None], axis=-1)[:, 0]
  conditional_loss = jnp.mean(bits_per_dim(true_log_likelihood, num_dims, n_bits))
  class_loss = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))
  loss = conditional_loss + class_loss_weight * class_loss
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  return loss, {"loss": loss, "bits_per_dim": conditional_loss, "class_loss": class_loss,
                "accuracy": accuracy}

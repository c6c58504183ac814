"""Dequantisation, bits per dimension, and the training losses of the flow models.

Images are n-bit integers k in [0, 2**n_bits); a flow models continuous x = (k + u) / n_bins - 0.5
with u ~ U[0, 1)^D (uniform dequantisation), so the discrete log-likelihood is bounded below by log
p(x) - D log n_bins and bits/dim = -(log p(x) - D log n_bins) / (D ln 2).

A model with `svd_rank` (BPLF's SVD truncation) is a density of the truncated data: the integer
image is truncated, rounded back to n-bit integers, and only then dequantised (`model_input`).
Truncating after dequantisation would put the model's input on a set of measure zero, where a
density is unbounded above and bits/dim mean nothing.

Metric names say which likelihood they are: "bits_per_dim" is of p(x) (the marginal for a
class-conditional model), "bits_per_dim_given_label" of p(x | y) with the true label.
"""

from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxflow.preprocessing import svd_truncate

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


def truncate_images(images: Array, rank: int, n_bits: int) -> Array:
  """uint8 `images` whose n-bit integer image is SVD-truncated to `rank` and rounded back to n-bit
  integers (clipped to the valid range), in 8-bit range again, so `dequantize` reads them."""
  n_bins = _check_n_bits(n_bits)
  truncated = svd_truncate(quantize(images, n_bits).astype(jnp.float32), rank=rank)
  bins = jnp.clip(jnp.round(truncated), 0, n_bins - 1).astype(jnp.int32)
  return (bins << (8 - n_bits)).astype(jnp.uint8)


def model_input(model: nn.Module, rng: Optional[Array], images: Array, n_bits: int, *,
                raw: bool = False) -> Array:
  """The continuous input whose density `model` gives: uint8 `images`, SVD-truncated on the
  discrete image for a model with `svd_rank` (unless `raw`), then dequantised."""
  if model.truncates_input and not raw:
    images = truncate_images(images, model.svd_rank, n_bits)
  return dequantize(rng, images, n_bits)


def postprocess(x: Array, n_bits: int = 8) -> Array:
  """Continuous x in [-0.5, 0.5) -> uint8 images (the bin of each value, back in 8-bit range)."""
  n_bins = _check_n_bits(n_bits)
  bins = jnp.clip(jnp.floor((x.astype(jnp.float32) + 0.5) * n_bins), 0, n_bins - 1)
  return (bins * (256 // n_bins)).astype(jnp.uint8)


def bits_per_dim(log_prob: Array, num_dims: int, n_bits: int = 8) -> Array:
  """Bits per dimension of discrete data from the log-density (nats) of its dequantised version."""
  n_bins = _check_n_bits(n_bits)
  return -(log_prob - num_dims * np.log(n_bins)) / (num_dims * np.log(2.0))


def class_log_joint(model: nn.Module, variables, x: Array) -> Array:
  """log p(x | y=i) + log p(y=i) for every class i, shape (B, num_classes): the classifier's
  logits, or a class-conditional flow's likelihoods with a uniform p(y)."""
  if model.is_classifier:
    return model.apply(variables, x, method="class_logits")
  num_classes = model.num_classes
  if not num_classes:
    raise ValueError(f"{type(model).__name__} is not class-conditional (num_classes=0): it has no "
                     "class scores")
  batch = x.shape[0]
  # Every class at once along the batch axis, each example's rows together (so that a chip's rows
  # under data parallelism stay its own examples).
  classes = jnp.tile(jnp.arange(num_classes), batch)
  log_prob = model.apply(variables, jnp.repeat(x, num_classes, axis=0), classes,
                         method="log_prob")
  return log_prob.reshape(batch, num_classes) - np.log(num_classes)


def zeroed_deepest_error(model: nn.Module, variables, x: Array,
                         labels: Optional[Array]) -> Array:
  """Mean squared error of `x` decoded from its latents with f's deepest latent z_1 set to zero
  (what transfer with `zero_deepest` decodes)."""
  decoded = model.apply(variables, x, model.conditioning_labels(labels),
                        method="decode_without_deepest")
  return jnp.mean(jnp.square(decoded - x))


def loss_and_metrics(model: nn.Module, variables, images: Array, labels: Optional[Array],
                     rng: Optional[Array], *, n_bits: int = 8, class_loss_weight: float = 0.3,
                     zero_deepest_weight: float = 0.0,
                     with_marginal: bool = False) -> Tuple[Array, Dict[str, Array]]:
  """The training loss of `model` on a batch of uint8 images, and scalar metrics.

  Flows: the mean bits/dim (the negative log-likelihood, scaled per dimension) of p(x), or of
  p(x | y) for a class-conditional flow ("bits_per_dim_given_label"). The classifier: L_cond +
  class_loss_weight * L_class, with L_cond = -log p(x|y) in bits/dim and L_class the cross entropy
  of the class logits log p(x|y=i) + log p(y=i) (paper eq. 3-6). The classifier always reports the
  marginal "bits_per_dim" of p(x) (its logits hold it); a class-conditional flow does when
  `with_marginal` (one pass per class: for evaluation, not training).

  `zero_deepest_weight` > 0 adds that weight times `zeroed_deepest_error` ("zeroed_z1_error"):
  the model learns to keep the image in its shallower latents, so that decoding with z_1 zeroed
  (the classifier paper's transfer, IV-D) still gives the face. The paper says only that it zeroes
  z_1 and trains longer; this term is how this project reads that.
  """
  x = model_input(model, rng, images, n_bits)
  loss, metrics = _likelihood_loss(model, variables, x, labels, n_bits, class_loss_weight,
                                   with_marginal)
  if zero_deepest_weight:
    error = zeroed_deepest_error(model, variables, x, labels)
    loss = loss + zero_deepest_weight * error
    metrics = dict(metrics, loss=loss, zeroed_z1_error=error)
  return loss, metrics


def _likelihood_loss(model: nn.Module, variables, x: Array, labels: Optional[Array], n_bits: int,
                     class_loss_weight: float,
                     with_marginal: bool) -> Tuple[Array, Dict[str, Array]]:
  num_dims = int(np.prod(x.shape[1:]))
  mean_bits = lambda log_prob: jnp.mean(bits_per_dim(log_prob, num_dims, n_bits))
  if not model.is_classifier:
    if with_marginal and model.is_class_conditional:
      # log p(x | y_true) is one of the per-class passes: no pass of its own.
      log_joint = class_log_joint(model, variables, x)
      given_label = (jnp.take_along_axis(log_joint, labels[:, None], axis=-1)[:, 0]
                     + np.log(model.num_classes))
      bpd = mean_bits(given_label)
      return bpd, {"loss": bpd, "bits_per_dim_given_label": bpd,
                   "bits_per_dim": mean_bits(jax.nn.logsumexp(log_joint, axis=-1)),
                   "accuracy": jnp.mean(jnp.argmax(log_joint, axis=-1) == labels)}
    bpd = mean_bits(model.apply(variables, x, model.conditioning_labels(labels),
                                method="log_prob"))
    if not model.is_class_conditional:
      return bpd, {"loss": bpd, "bits_per_dim": bpd}
    return bpd, {"loss": bpd, "bits_per_dim_given_label": bpd}
  log_likelihoods = model.apply(variables, x, method="class_log_likelihoods")
  log_prior = model.apply(variables, method="class_log_prior")
  logits = log_likelihoods + log_prior
  true_log_likelihood = jnp.take_along_axis(log_likelihoods, labels[:, None], axis=-1)[:, 0]
  conditional_loss = mean_bits(true_log_likelihood)
  class_loss = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))
  loss = conditional_loss + class_loss_weight * class_loss
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  return loss, {"loss": loss, "bits_per_dim_given_label": conditional_loss,
                "bits_per_dim": mean_bits(jax.nn.logsumexp(logits, axis=-1)),
                "class_loss": class_loss, "accuracy": accuracy}

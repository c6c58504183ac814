"""The conditional-Glow expression classifier (flow-latent expression recognition paper, sec. III).

A Glow f(x) maps an image to latents {z_L, ..., z_1} with z_1 the deepest one; a small conditional
flow h(z_1, y) (one level of Glow steps, the one-hot y fed to every coupling) maps z_1 to z_1',
which has a learned Gaussian prior. So

    log p(x | y) = log p(z_L..z_2 | f) + log|det df/dx| + log N(h(z_1, y)) + log|det dh/dz_1|
                                                                                          (eq. 2)

and the class logits are log p(x | y=i) + log p(y=i) for every class i (eq. 4): f runs once, h once
per class (the classes stacked along the batch axis, example-major). log p(y) is a learned
categorical.
"""

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.distributions import TopPrior, gaussian_log_prob, gaussian_sample
from flaxflow.models.capabilities import ModelCapabilities
from flaxflow.models.glow import Glow, glow_step
from flaxflow.models.multiscale import Latents, top_latent_shape
from flaxflow.models.step_stack import StepStack

Array = jax.Array


class ConditionalGlowClassifier(ModelCapabilities, nn.Module):
  """Glow f(x) with a conditional flow h(z_1, y) of `h_steps` Glow steps on its deepest latent."""

  is_classifier = True

  image_shape: Tuple[int, int, int]
  num_classes: int = 7
  levels: int = 3
  steps_per_level: int = 8
  width: int = 512
  h_steps: int = 4
  h_width: int = 128
  additive: bool = False
  use_lu: bool = True
  gradient: str = "save_products"
  scan_unroll: int = 1
  dtype: Any = jnp.float32

  def setup(self):
    if self.num_classes < 2:
      raise ValueError(f"num_classes={self.num_classes}: a classifier needs at least two classes")
    self.flow = Glow(self.image_shape, num_classes=0, levels=self.levels,
                     steps_per_level=self.steps_per_level, width=self.width,
                     additive=self.additive, use_lu=self.use_lu, gradient=self.gradient,
                     scan_unroll=self.scan_unroll, dtype=self.dtype)
    self.conditional_flow = StepStack(
        functools.partial(glow_step, self.h_width, self.additive, self.use_lu, self.dtype),
        self.h_steps, self.gradient, scan_unroll=self.scan_unroll)
    self.top_prior = TopPrior(top_latent_shape(self.image_shape, self.levels))
    self.class_prior_logits = self.param("class_prior_logits", nn.initializers.zeros,
                                         (self.num_classes,))

  def _one_hot(self, labels: Array) -> Array:
    return jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)

  def _conditional_top(self, z1: Array, cond: Array) -> Tuple[Array, Array]:
    """z_1' = h(z_1, y) and log N(z_1') + log|det dh/dz_1|."""
    z1_prime, log_det = self.conditional_flow.forward_and_log_det(z1, cond)
    mean, log_scale = self.top_prior(z1.shape[0], None)
    return z1_prime, gaussian_log_prob(z1_prime, mean, log_scale) + log_det

  def class_log_prior(self) -> Array:
    """log p(y) for every class, shape (num_classes,)."""
    return jax.nn.log_softmax(self.class_prior_logits)

  def class_log_likelihoods(self, x: Array) -> Array:
    """log p(x | y=i) for every class i, shape (B, num_classes)."""
    latents, log_det, split_log_prob = self.flow.encode_levels(x, None)
    batch = x.shape[0]
    # Each example's rows next to each other (example-major): under data parallelism a chip's
    # rows stay its own examples. Class-major rows would mix every chip's examples on each chip,
    # and the compiler would replicate the whole step.
    z1 = jnp.repeat(latents[-1], self.num_classes, axis=0)
    classes = jnp.tile(jnp.arange(self.num_classes), batch)
    _, top_log_prob = self._conditional_top(z1, self._one_hot(classes))
    return (log_det + split_log_prob)[:, None] + top_log_prob.reshape(batch, self.num_classes)

  def class_logits(self, x: Array) -> Array:
    """log p(x | y=i) + log p(y=i), shape (B, num_classes); the prediction is their argmax."""
    return self.class_log_likelihoods(x) + self.class_log_prior()

  def log_prob(self, x: Array, labels: Optional[Array] = None) -> Array:
    """log p(x | y) with labels; without, the marginal log p(x) = log sum_i p(x | i) p(i)."""
    if labels is None:
      return jax.nn.logsumexp(self.class_logits(x), axis=-1)
    latents, log_det, split_log_prob = self.flow.encode_levels(x, None)
    _, top_log_prob = self._conditional_top(latents[-1], self._one_hot(labels))
    return log_det + split_log_prob + top_log_prob

  def encode(self, x: Array, labels: Optional[Array] = None) -> Tuple[Latents, Array]:
    """f's latents, the deepest one replaced by z_1' = h(z_1, y) when labels are given."""
    latents, log_det, _ = self.flow.encode_levels(x, None)
    if labels is None:
      return latents, log_det
    z1_prime, h_log_det = self.conditional_flow.forward_and_log_det(latents[-1],
                                                                    self._one_hot(labels))
    return latents[:-1] + (z1_prime,), log_det + h_log_det

  def decode(self, latents: Latents, labels: Optional[Array] = None) -> Array:
    """Inverse of `encode` (with the same labels, or none)."""
    z1 = latents[-1]
    if labels is not None:
      z1, _ = self.conditional_flow.inverse_and_log_det(z1, self._one_hot(labels))
    return self.flow.decode_levels(z1, None, lambda level, h: latents[level])

  def decode_without_deepest(self, x: Array, labels: Optional[Array] = None) -> Array:
    """`x` through f with f's own z_1 (not z_1') set to zero; h and the labels play no part."""
    del labels
    return self.flow.decode_without_deepest(x)

  def sample(self, rng: Array, num_samples: int, labels: Optional[Array] = None,
             temperature: float = 1.0) -> Array:
    """Images of the given classes (drawn from p(y) when labels is None)."""
    label_rng, top_rng, split_rng = jax.random.split(rng, 3)
    if labels is None:
      labels = jax.random.categorical(label_rng, self.class_prior_logits, shape=(num_samples,))
    mean, log_scale = self.top_prior(num_samples, None)
    z1_prime = gaussian_sample(top_rng, mean, log_scale, temperature)
    z1, _ = self.conditional_flow.inverse_and_log_det(z1_prime, self._one_hot(labels))
    return self.flow.decode_sampling_splits(split_rng, z1, None, temperature)

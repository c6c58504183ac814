"""The multi-scale architecture shared by Glow and BPLF (Dinh et al.'s Real NVP, as Glow uses it).

Each of the L levels squeezes (2x2 space-to-depth), runs K flow steps, and, except the last, splits
half of the channels off to a learned Gaussian prior conditioned on the other half; the deepest
latent has a learned prior of its own. With `num_classes > 0` the priors are class-conditional, and
with `condition_steps` the one-hot label is also fed to every step's coupling network.

Latents are returned shallowest first, the deepest last: ``(z_L, ..., z_2, z_1)``, numbered as the
flow-latent classifier paper numbers them (z_1 the deepest; the project uses that one notation).
"""

from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.bijectors import Bijector, Squeeze
from flaxflow.distributions import SplitPrior, TopPrior, gaussian_log_prob, gaussian_sample
from flaxflow.models.capabilities import ModelCapabilities
from flaxflow.models.step_stack import StepStack

Array = jax.Array
Latents = Tuple[Array, ...]


def top_latent_shape(image_shape: Sequence[int], levels: int) -> Tuple[int, int, int]:
  """Shape (H, W, C) of the deepest latent of an L-level flow on `image_shape` images."""
  height, width, channels = image_shape
  return height >> levels, width >> levels, channels * 2 ** (levels + 1)


def validate_image_shape(image_shape: Sequence[int], levels: int) -> None:
  if len(image_shape) != 3:
    raise ValueError(f"image_shape={tuple(image_shape)}: expected (height, width, channels)")
  if levels < 1:
    raise ValueError(f"levels={levels}: a multi-scale flow needs at least one level")
  factor = 2 ** levels
  if image_shape[0] % factor or image_shape[1] % factor:
    raise ValueError(f"image_shape={tuple(image_shape)}: height and width must be divisible by "
                     f"2**levels = {factor} (levels={levels})")


class MultiscaleFlow(ModelCapabilities, nn.Module):
  """Base of the multi-scale flows; subclasses say what one step is (`step_factory`)."""

  image_shape: Tuple[int, int, int]
  num_classes: int = 0
  levels: int = 3
  steps_per_level: int = 8
  condition_steps: bool = False
  # The data are SVD-truncated to this rank on the discrete image, before dequantisation
  # (`flaxflow.objectives.model_input`): the model is a density of the truncated data.
  svd_rank: Optional[int] = None
  gradient: str = "save_products"
  scan_unroll: int = 1

  def step_factory(self) -> Callable[[], Bijector]:
    raise NotImplementedError(f"{type(self).__name__} must say what one flow step is")

  def setup(self):
    validate_image_shape(self.image_shape, self.levels)
    self.squeeze = Squeeze()
    self.level_steps = [
        StepStack(self.step_factory(), self.steps_per_level, self.gradient,
                  scan_unroll=self.scan_unroll)
        for _ in range(self.levels)
    ]
    self.split_priors = [SplitPrior() for _ in range(self.levels - 1)]
    self.top_prior = TopPrior(top_latent_shape(self.image_shape, self.levels))

  def one_hot(self, labels: Optional[Array]) -> Optional[Array]:
    """The one-hot conditioning of `labels`, or None for an unconditional model."""
    if self.num_classes == 0:
      if labels is not None:
        raise ValueError("labels were given to an unconditional model (num_classes=0)")
      return None
    if labels is None:
      raise ValueError(f"this model is class-conditional (num_classes={self.num_classes}): "
                       "pass labels")
    return jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)

  def _step_cond(self, cond):
    return cond if self.condition_steps else None

  def encode_levels(self, x: Array, cond: Optional[Array]):
    """Runs the levels on `x`: (latents, log_det, log-prob of the split-off latents)."""
    self._check_input(x)
    h = x
    log_det = jnp.zeros(x.shape[:1], jnp.float32)
    split_log_prob = jnp.zeros(x.shape[:1], jnp.float32)
    latents = []
    for level in range(self.levels):
      h, _ = self.squeeze.forward_and_log_det(h)
      h, level_log_det = self.level_steps[level].forward_and_log_det(h, self._step_cond(cond))
      log_det = log_det + level_log_det
      if level < self.levels - 1:
        h, z = jnp.split(h, 2, axis=-1)
        mean, log_scale = self.split_priors[level](h, cond)
        split_log_prob = split_log_prob + gaussian_log_prob(z, mean, log_scale)
        latents.append(z)
    latents.append(h)
    return tuple(latents), log_det, split_log_prob

  def decode_levels(self, h_top: Array, cond: Optional[Array],
                    split_latent: Callable[[int, Array], Array]) -> Array:
    """Inverts the levels from the deepest latent; `split_latent(level, h)` gives each split z."""
    h = h_top
    for level in reversed(range(self.levels)):
      if level < self.levels - 1:
        h = jnp.concatenate([h, split_latent(level, h)], axis=-1)
      h, _ = self.level_steps[level].inverse_and_log_det(h, self._step_cond(cond))
      h, _ = self.squeeze.inverse_and_log_det(h)
    return h

  def _check_input(self, x: Array) -> None:
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"input of shape {x.shape} does not match the model's image_shape "
                       f"{tuple(self.image_shape)}")

  # The public API: each method works with `model.apply(variables, ..., method=...)`.

  def log_prob(self, x: Array, labels: Optional[Array] = None) -> Array:
    """Per-example log-density in nats of continuous inputs `x` (B, H, W, C)."""
    cond = self.one_hot(labels)
    latents, log_det, split_log_prob = self.encode_levels(x, cond)
    mean, log_scale = self.top_prior(x.shape[0], cond)
    return split_log_prob + gaussian_log_prob(latents[-1], mean, log_scale) + log_det

  def encode(self, x: Array, labels: Optional[Array] = None) -> Tuple[Latents, Array]:
    """All per-level latents (shallowest first) and the log-det of the whole flow."""
    latents, log_det, _ = self.encode_levels(x, self.one_hot(labels))
    return latents, log_det

  def decode(self, latents: Latents, labels: Optional[Array] = None) -> Array:
    """The image whose encoding is `latents`."""
    cond = self.one_hot(labels)
    return self.decode_levels(latents[-1], cond, lambda level, h: latents[level])

  def decode_without_deepest(self, x: Array, labels: Optional[Array] = None) -> Array:
    """`x` encoded, its deepest latent z_1 set to zero, and decoded."""
    cond = self.one_hot(labels)
    latents, _, _ = self.encode_levels(x, cond)
    return self.decode_levels(jnp.zeros_like(latents[-1]), cond,
                              lambda level, h: latents[level])

  def sample(self, rng: Array, num_samples: int, labels: Optional[Array] = None,
             temperature: float = 1.0) -> Array:
    """`num_samples` images drawn at `temperature` (the priors' scales are multiplied by it)."""
    cond = self.one_hot(labels)
    top_rng, split_rng = jax.random.split(rng)
    mean, log_scale = self.top_prior(num_samples, cond)
    h_top = gaussian_sample(top_rng, mean, log_scale, temperature)
    return self.decode_sampling_splits(split_rng, h_top, cond, temperature)

  def decode_sampling_splits(self, rng: Array, h_top: Array, cond: Optional[Array],
                             temperature: float) -> Array:
    """Inverts the levels from `h_top`, drawing each split-off latent from its prior."""

    def split_latent(level, h):
      mean, log_scale = self.split_priors[level](h, cond)
      return gaussian_sample(jax.random.fold_in(rng, level), mean, log_scale, temperature)

    return self.decode_levels(h_top, cond, split_latent)

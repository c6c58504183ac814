"""Pictures from a trained flow: samples per class and temperature, expression transfer and
interpolation.

Expression transfer follows the flow-latent expression recognition paper (section IV-D): with the
class-mean latents over a training set, an image's latents z move to z + (z̄_c - z̄_other), where
z̄_other is the mean over the examples of every other class, and are decoded. Latents come from
`encode` with a source label for class-conditional models (for the classifier: f's latents with
z_1 replaced by z_1' = h(z_1, y)), and are decoded with the target label, so both the latent
shift and the model's conditioning move the image towards class c. The source label is the
caller's: the research tools pass the model's own prediction (`evaluation.predict_labels`), since
a test image's true label is not something a recogniser may read.

Which latents the classifier moves: f's split-off latents z_L..z_2 and z_1' = h(z_1, y_source),
decoded through h⁻¹(·; y_target) and f⁻¹. With `zero_deepest` (the paper's cleaner faces, IV-D)
f's own z_1 is set to zero, for every model: the classifier then decodes the moved z_L..z_2 with
z_1 = 0 through f⁻¹ alone, and Glow and BPLF their moved latents with z_1 = 0 and the target label.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxflow import objectives, parallel
from flaxflow.analysis import batches as batches_lib

Array = jax.Array
Latents = Tuple[Array, ...]


def sample_grid(model: nn.Module, variables: Any, rng: Array, *, samples_per_class: int,
                temperature: float, n_bits: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """uint8 samples (rows, samples_per_class, H, W, C): one row per class, one if unconditional."""
  rows = max(1, model.num_classes)
  labels = model.conditioning_labels(jnp.repeat(jnp.arange(rows), samples_per_class))

  @functools.partial(jax.jit, out_shardings=parallel.replicated_sharding(mesh))
  def draw(variables, rng):
    x = model.apply(variables, rng, rows * samples_per_class, labels, temperature,
                    method="sample")
    return objectives.postprocess(x, n_bits)

  samples = np.asarray(jax.device_get(draw(variables, rng)))
  return samples.reshape(rows, samples_per_class, *samples.shape[1:])


def class_sample_grids(model: nn.Module, variables: Any, rng: Array, *,
                       temperatures: Sequence[float], samples_per_class: int, n_bits: int,
                       mesh: Optional[jax.sharding.Mesh] = None) -> Dict[float, np.ndarray]:
  """{temperature: uint8 (classes, samples_per_class, H, W, C)}, one row per class.

  Every temperature uses the same noise, so the grids differ only by the temperature.
  """
  if not model.is_class_conditional:
    raise ValueError(f"{type(model).__name__} is unconditional (num_classes=0): it has no classes "
                     "to sample; use unconditional_samples")
  mesh = parallel.make_mesh() if mesh is None else mesh
  return {temperature: sample_grid(model, variables, rng, samples_per_class=samples_per_class,
                                   temperature=temperature, n_bits=n_bits, mesh=mesh)
          for temperature in temperatures}


def unconditional_samples(model: nn.Module, variables: Any, rng: Array, *, rows: int,
                          columns: int, temperature: float, n_bits: int) -> np.ndarray:
  """uint8 (rows, columns, H, W, C) samples of p(x): classes drawn from the classifier's learned
  p(y), uniformly for class-conditional Glow and BPLF."""
  num_samples = rows * columns
  label_rng, sample_rng = jax.random.split(rng)
  labels = None
  if model.is_class_conditional and not model.is_classifier:
    labels = jax.random.randint(label_rng, (num_samples,), 0, model.num_classes)

  @jax.jit
  def draw(variables, sample_rng, labels, temperature):
    x = model.apply(variables, sample_rng, num_samples, labels, temperature, method="sample")
    return objectives.postprocess(x, n_bits)

  samples = np.asarray(jax.device_get(draw(variables, sample_rng, labels, temperature)))
  return samples.reshape(rows, columns, *samples.shape[1:])


def _encode(model: nn.Module, variables: Any, images: Array, labels: Array,
            n_bits: int) -> Latents:
  """Latents of uint8 `images` at their bin centres (deterministic), with their labels if needed."""
  x = objectives.model_input(model, None, images, n_bits)
  latents, _ = model.apply(variables, x, model.conditioning_labels(labels), method="encode")
  return latents


def _decode(model: nn.Module, variables: Any, latents: Latents, labels: Array,
            n_bits: int) -> Array:
  x = model.apply(variables, latents, model.conditioning_labels(labels), method="decode")
  return objectives.postprocess(x, n_bits)


@dataclasses.dataclass(frozen=True)
class LatentShift:
  """How a flow's transfer moves latents: z + strength * (z̄_c - z̄_other), with f's deepest
  latent zeroed if `zero_deepest`, each input encoded with its true label if
  `true_source_labels` (which leaks the test label) instead of the model's own prediction."""
  strength: float = 1.0
  zero_deepest: bool = False
  true_source_labels: bool = False


@dataclasses.dataclass(frozen=True)
class ClassLatentSums:
  """Per-class sums of every latent over a dataset: `sums[level]` (classes, *latent shape)."""
  sums: Tuple[np.ndarray, ...]
  counts: np.ndarray  # (classes,) examples per class.

  def expression_shifts(self) -> Tuple[np.ndarray, ...]:
    """z̄_c - z̄_other per level, shape (classes, *latent shape): other = all other examples."""
    empty = np.flatnonzero(self.counts == 0)
    if empty.size:
      raise ValueError(f"classes {empty.tolist()} have no examples: their mean latent is undefined")
    total = self.counts.sum()
    if total == self.counts.max():
      raise ValueError("every example has one class: there is no 'other' mean")
    shifts = []
    for level_sums in self.sums:
      per_class = level_sums.reshape(len(self.counts), -1)
      class_mean = per_class / self.counts[:, None]
      other_mean = (per_class.sum(axis=0) - per_class) / (total - self.counts)[:, None]
      shifts.append((class_mean - other_mean).reshape(level_sums.shape).astype(np.float32))
    return tuple(shifts)


def class_latent_sums(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
                      num_classes: int, n_bits: int,
                      mesh: Optional[jax.sharding.Mesh] = None) -> ClassLatentSums:
  """Per-class latent sums (float64) of every real example of `batches`."""
  encode = jax.jit(lambda variables, images, labels: _encode(model, variables, images, labels,
                                                              n_bits))

  def run(images, labels, index):
    del index
    return {str(level): z for level, z in enumerate(encode(variables, images, labels))}

  sums, counts = None, np.zeros(num_classes, np.int64)
  for latents, batch in batches_lib.map_batches(run, batches, mesh):
    one_hot = np.eye(num_classes)[batch["label"]]
    batch_sums = [np.tensordot(one_hot, latents[str(level)].astype(np.float64), axes=(0, 0))
                  for level in range(len(latents))]
    sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums)]
    counts += one_hot.sum(axis=0).astype(np.int64)
  if sums is None:
    raise ValueError("batches: no batches")
  return ClassLatentSums(sums=tuple(sums), counts=counts)


def expression_transfer(model: nn.Module, shifts: Sequence[np.ndarray], *, n_bits: int,
                        zero_deepest: bool = False, strength: float = 1.0
                        ) -> Callable[[Any, np.ndarray, np.ndarray], np.ndarray]:
  """`transfer_expressions` as a function of (variables, images, labels), compiled once for all
  its calls (per shape of `images`)."""
  num_classes = shifts[0].shape[0]
  # The classifier's decode without labels takes latents[-1] as f's z_1 itself.
  decode_with_targets = not (zero_deepest and model.is_classifier)

  @jax.jit
  def run(variables, images, labels, shifts):
    latents = _encode(model, variables, images, labels, n_bits)
    batch = images.shape[0]
    moved = [(z[None] + strength * shift[:, None]).reshape(num_classes * batch, *z.shape[1:])
             for z, shift in zip(latents, shifts)]
    if zero_deepest:
      moved[-1] = jnp.zeros_like(moved[-1])
    targets = jnp.repeat(jnp.arange(num_classes), batch) if decode_with_targets else None
    decoded = _decode(model, variables, tuple(moved), targets, n_bits)
    return jnp.swapaxes(decoded.reshape(num_classes, batch, *images.shape[1:]), 0, 1)

  shifts = tuple(shifts)
  return lambda variables, images, labels: np.asarray(jax.device_get(run(
      variables, jnp.asarray(images), jnp.asarray(labels, jnp.int32), shifts)))


def transfer_expressions(model: nn.Module, variables: Any, images: np.ndarray,
                         labels: np.ndarray, shifts: Sequence[np.ndarray], *, n_bits: int,
                         zero_deepest: bool = False, strength: float = 1.0) -> np.ndarray:
  """uint8 (B, classes, H, W, C): each image moved to every class c by z + strength * shift_c.

  `labels` are the source labels the images are encoded with (see the module's docstring), and
  `shifts` from `ClassLatentSums.expression_shifts`. `zero_deepest` sets f's deepest latent z_1
  to zero before decoding, as the paper does for cleaner faces (the classifier's h is then not
  used: its z_1' would decode to a class-dependent z_1 = h⁻¹(0; y) ≠ 0).
  """
  return expression_transfer(model, shifts, n_bits=n_bits, zero_deepest=zero_deepest,
                             strength=strength)(variables, images, labels)


def interpolate(model: nn.Module, variables: Any, images_a: np.ndarray, labels_a: np.ndarray,
                images_b: np.ndarray, labels_b: np.ndarray, *, num_points: int,
                n_bits: int) -> np.ndarray:
  """uint8 (B, num_points, H, W, C): decodings of (1 - t) z_a + t z_b for t from 0 to 1.

  The classifier interpolates the latents of its unconditional f (no labels needed). Class-
  conditional Glow and BPLF encode each end with its label and decode each point with the label
  of the nearer end, so pairs of one class interpolate within it.
  """
  if num_points < 2:
    raise ValueError(f"num_points={num_points}: an interpolation needs at least its two ends")
  weights = np.linspace(0.0, 1.0, num_points, dtype=np.float32)
  label_free = model.is_classifier

  @jax.jit
  def run(variables, images_a, labels_a, images_b, labels_b):
    if label_free:
      labels_a = labels_b = None
    latents_a = _encode(model, variables, images_a, labels_a, n_bits)
    latents_b = _encode(model, variables, images_b, labels_b, n_bits)
    batch = images_a.shape[0]
    mixed = []
    for z_a, z_b in zip(latents_a, latents_b):
      t = weights.reshape(-1, *([1] * z_a.ndim))
      mixed.append(((1 - t) * z_a[None] + t * z_b[None]).reshape(num_points * batch,
                                                                 *z_a.shape[1:]))
    labels = None if label_free else jnp.where(weights[:, None] <= 0.5, labels_a[None],
                                               labels_b[None]).reshape(-1)
    decoded = _decode(model, variables, tuple(mixed), labels, n_bits)
    return jnp.swapaxes(decoded.reshape(num_points, batch, *images_a.shape[1:]), 0, 1)

  return np.asarray(jax.device_get(run(variables, jnp.asarray(images_a),
                                       jnp.asarray(labels_a, jnp.int32), jnp.asarray(images_b),
                                       jnp.asarray(labels_b, jnp.int32))))

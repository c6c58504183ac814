"""A trained DECGAN at work: every input moved to every expression and back, E2's reading of
images, E2's mean condition of each class, E1's identity codes. uint8 images in and out (the
networks' pixel convention is `flaxflow.gan.pixels`); each function is compiled once per model and
input shape.
"""

import functools
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flaxflow.analysis import batches as batches_lib
from flaxflow.gan import decgan

Array = jax.Array


@functools.partial(jax.jit, static_argnums=(0, 1))
def _to_every_class(model: decgan.DECGAN, cycled: bool, variables: Any, inputs: Array,
                    class_conditions: Optional[Array]) -> Array:
  """uint8 (B, classes, H, W, C): every input moved to every class (`decgan.transfer_to_class`),
  or moved and back (`decgan.cycle_reconstruction`) when `cycled`; compiled once per model and
  input shape."""
  batch, num_classes = inputs.shape[0], model.num_classes
  repeated = jnp.repeat(inputs, num_classes, axis=0)
  classes = jnp.tile(jnp.arange(num_classes), batch)
  if cycled:
    images = decgan.cycle_reconstruction(
        model, variables, repeated,
        decgan.class_conditions_of(classes, num_classes, class_conditions))
  else:
    images = decgan.transfer_to_class(model, variables, repeated, classes, class_conditions)
  return images.reshape(batch, num_classes, *inputs.shape[1:])


def class_transfer(model: decgan.DECGAN, class_conditions: Optional[np.ndarray] = None
                   ) -> Callable[[Any, np.ndarray], np.ndarray]:
  """(variables, inputs) -> uint8 (B, classes, H, W, C): `class_transfers` with the model and
  the conditions fixed."""
  return lambda variables, inputs: class_transfers(model, variables, inputs, class_conditions)


def check_images(model: decgan.DECGAN, images: Any) -> None:
  """A one-line ValueError unless `images` are uint8 (B, H, W, C) of the model's image shape:
  an image of another size or channel count would be drawn by networks that never saw it."""
  shape, dtype = np.shape(images), getattr(images, "dtype", None)
  if shape[1:] != tuple(model.image_shape) or dtype != np.uint8:
    raise ValueError(f"images of shape {shape} and dtype {dtype}: expected uint8 (B, "
                     f"{', '.join(map(str, model.image_shape))}), the images this DECGAN was "
                     "trained on")


def _checked_every_class(model: decgan.DECGAN, cycled: bool, variables: Any, inputs: np.ndarray,
                         class_conditions: Optional[np.ndarray]) -> np.ndarray:
  check_images(model, inputs)
  return np.asarray(_to_every_class(model, cycled, variables, jnp.asarray(inputs),
                                    class_conditions))


def class_transfers(model: decgan.DECGAN, variables: Any, inputs: np.ndarray,
                    class_conditions: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 (B, classes, H, W, C): every input moved to every class
  (`decgan.transfer_to_class`)."""
  return _checked_every_class(model, False, variables, inputs, class_conditions)


def class_cycles(model: decgan.DECGAN, variables: Any, inputs: np.ndarray,
                 class_conditions: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 (B, classes, H, W, C): every input moved to every class and back by the cycle
  (`decgan.cycle_reconstruction`)."""
  return _checked_every_class(model, True, variables, inputs, class_conditions)


_expression_probabilities = jax.jit(decgan.expression_probabilities, static_argnums=0)
_identity_codes = jax.jit(decgan.identity_codes, static_argnums=0)


def identity_codes(model: decgan.DECGAN, variables: Any, inputs: np.ndarray) -> np.ndarray:
  """E1's z of each uint8 image."""
  check_images(model, inputs)
  return np.asarray(_identity_codes(model, variables, jnp.asarray(inputs)))


def expression_classes(model: decgan.DECGAN, variables: Any, inputs: np.ndarray) -> np.ndarray:
  """E2's most probable class of each uint8 image."""
  check_images(model, inputs)
  return np.asarray(jnp.argmax(_expression_probabilities(model, variables, jnp.asarray(inputs)),
                               axis=-1))


def class_mean_conditions(model: decgan.DECGAN, variables: Any,
                          batches: Iterable[batches_lib.Batch],
                          mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
  """(classes, classes): E2's mean p(l) over the images of each class in `batches`, the
  condition `decgan.transfer_to_class` takes for a class; a class without images gets its
  one-hot."""
  probabilities = functools.partial(_expression_probabilities, model)
  sums = np.zeros((model.num_classes, model.num_classes))
  counts = np.zeros(model.num_classes)
  for outputs, batch in batches_lib.map_batches(
      lambda images_, labels, index: {"p": probabilities(variables, images_)}, batches, mesh):
    np.add.at(sums, batch["label"], outputs["p"])
    np.add.at(counts, batch["label"], 1)
  means = np.eye(model.num_classes)
  seen = counts > 0
  means[seen] = sums[seen] / counts[seen, None]
  return means.astype(np.float32)

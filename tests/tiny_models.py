"""The smallest real flows, and parameter noise, shared by every test that needs a model.

Untrained flows start close to the identity (zero-initialised output convolutions, identity
ActNorm), where many bugs cancel out; `perturb_params` moves every parameter off its initial
value so that each layer acts.
"""

import jax
import numpy as np

from flaxflow import models

NUM_CLASSES = 3


def build(name, steps=1, **overrides):
  """A tiny `name` model on 4x4 grayscale images with `steps` flow steps per level (and in the
  classifier's h, whose classes are NUM_CLASSES)."""
  config = {"name": name, "image_shape": (4, 4, 1), "levels": 2, "steps_per_level": steps,
            "width": 8}
  if name == "classifier":
    config.update(num_classes=NUM_CLASSES, h_steps=steps, h_width=8)
  config.update(overrides)
  return models.create(config)


def perturb_params(variables, seed, scale=0.1):
  """Adds scale * N(0, 1) to every parameter."""
  # Host-side noise: drawing it with jax.random would cost an XLA compile per test.
  rng = np.random.default_rng(seed)

  def perturb(param):
    return np.asarray(param) + scale * rng.standard_normal(param.shape).astype(param.dtype)

  return {**variables, "params": jax.tree.map(perturb, variables.get("params", {}))}

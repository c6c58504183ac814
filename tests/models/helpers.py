"""Tiny models and images shared by the model tests."""

import jax
import jax.numpy as jnp
import numpy as np

from flaxflow import models


def perturb(variables, rng, scale=0.05):
  """Adds noise to every parameter so that zero-initialised layers are not the identity."""
  leaves, treedef = jax.tree.flatten(variables["params"])
  keys = jax.random.split(rng, len(leaves))
  noisy = [leaf + scale * jax.random.normal(key, leaf.shape, leaf.dtype)
           for leaf, key in zip(leaves, keys)]
  return {**variables, "params": jax.tree.unflatten(treedef, noisy)}


def tiny_images(rng, shape=(3, 4, 4, 1)):
  return jax.random.uniform(rng, shape, jnp.float32, -0.5, 0.5)


def build(name, **overrides):
  config = {"name": name, "image_shape": (4, 4, 1), "levels": 2, "steps_per_level": 2, "width": 8}
  if name == "classifier":
    config.update(num_classes=3, h_steps=2, h_width=8)
  config.update(overrides)
  return models.create(config)


def init(model, x, labels, seed=0):
  variables = model.init(jax.random.PRNGKey(seed), x, labels, method="log_prob")
  return perturb(variables, jax.random.PRNGKey(seed + 1))


def with_log_abs_det(jacobians, log_prob_of_noise):
  """log N(eps) + log|det d eps/dx| per example, the determinant taken in float64."""
  jacobians = np.asarray(jacobians, np.float64)
  jacobians = jacobians.reshape(jacobians.shape[0], jacobians.shape[1], -1)
  return np.asarray(log_prob_of_noise, np.float64) + np.linalg.slogdet(jacobians)[1]

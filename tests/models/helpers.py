"""Tiny images, initialised models and Jacobian log-likelihoods shared by the model tests."""

import jax
import jax.numpy as jnp
import numpy as np

from tiny_models import perturb_params


def tiny_images(rng, shape=(3, 4, 4, 1)):
  return jax.random.uniform(rng, shape, jnp.float32, -0.5, 0.5)


def init(model, x, labels, seed=0):
  variables = model.init(jax.random.PRNGKey(seed), x, labels, method="log_prob")
  return perturb_params(variables, seed + 1, scale=0.05)


def with_log_abs_det(jacobians, log_prob_of_noise):
  """log N(eps) + log|det d eps/dx| per example, the determinant taken in float64."""
  jacobians = np.asarray(jacobians, np.float64)
  jacobians = jacobians.reshape(jacobians.shape[0], jacobians.shape[1], -1)
  return np.asarray(log_prob_of_noise, np.float64) + np.linalg.slogdet(jacobians)[1]

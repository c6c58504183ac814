"""The one property check every bijector must pass: inverse, log-det against jacfwd, gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tiny_models import perturb_params

ROUND_TRIP_ATOL = 1e-4
LOG_DET_ATOL = 1e-3
SHAPE = (2, 4, 4, 8)
N_CLASSES = 3


def unit_inputs(shape=SHAPE, seed=1):
  """Standard-normal NHWC inputs."""
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def one_hot_cond(batch=SHAPE[0]):
  """Distinct one-hot labels per example, so rolling them over the batch changes every row."""
  return jax.nn.one_hot(jnp.arange(batch) % N_CLASSES, N_CLASSES)


def spatial_cond(shape=SHAPE, channels=2, seed=2):
  """A per-pixel conditioning map (batch, H, W, channels)."""
  return jax.random.normal(jax.random.key(seed), shape[:3] + (channels,), jnp.float32)


def init_perturbed(bijector, x, cond=None, seed=0):
  # rbg keys compile much faster than threefry ones on CPU.
  variables = jax.jit(bijector.init)(jax.random.key(seed, impl="rbg"), x, cond)
  return perturb_params(variables, seed)


def per_example_log_abs_det_jacobian(forward, variables, x, cond):
  """log|det dy/dx| of each example, from its dense jacfwd Jacobian (examples run separately)."""

  def flat_forward(flat_example, example_cond):
    example_cond = None if example_cond is None else example_cond[None]
    y, _ = forward(variables, flat_example.reshape((1,) + x.shape[1:]), example_cond)
    return y.reshape(-1)

  jacobians = jax.jit(jax.vmap(jax.jacfwd(flat_forward)))(x.reshape(x.shape[0], -1), cond)
  return np.linalg.slogdet(np.asarray(jacobians, np.float64))[1]


def check_bijector(bijector, x, cond=None, *, cond_matters=None, seed=0,
                   round_trip_atol=ROUND_TRIP_ATOL):
  """Checks ``bijector`` at perturbed params under jit; returns (variables, y, log_det).

  cond_matters: if True, rolling ``cond`` over the batch must change the output; if False it
  must not; None skips that check.
  """
  variables = init_perturbed(bijector, x, cond, seed)
  forward = jax.jit(functools.partial(bijector.apply, method="forward_and_log_det"))
  inverse = jax.jit(functools.partial(bijector.apply, method="inverse_and_log_det"))

  y, log_det = forward(variables, x, cond)
  assert log_det.shape == x.shape[:1] and log_det.dtype == jnp.float32, (log_det.shape,
                                                                          log_det.dtype)
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(log_det))

  x_back, inverse_log_det = inverse(variables, y, cond)
  assert x_back.shape == x.shape
  np.testing.assert_allclose(x_back, x, rtol=0, atol=round_trip_atol)
  assert inverse_log_det.shape == x.shape[:1] and inverse_log_det.dtype == jnp.float32
  np.testing.assert_allclose(inverse_log_det, -np.asarray(log_det), rtol=1e-5, atol=LOG_DET_ATOL)

  expected = per_example_log_abs_det_jacobian(forward, variables, x, cond)
  np.testing.assert_allclose(log_det, expected, rtol=1e-5, atol=LOG_DET_ATOL)

  def loss(params, x):
    variables_ = {**variables, "params": params}
    y, log_det = forward(variables_, x, cond)
    # The inverse at x itself (not at y, where it would cancel the forward's dependence).
    x_inverse, inverse_log_det = inverse(variables_, x, cond)
    return (jnp.sum(y ** 2) - jnp.sum(log_det) + jnp.sum(x_inverse ** 2)
            + jnp.sum(inverse_log_det))

  param_grads, input_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables.get("params", {}),
                                                                     x)
  assert np.all(np.isfinite(input_grad))
  for path, grad in jax.tree_util.tree_leaves_with_path(jax.device_get(param_grads)):
    assert np.all(np.isfinite(grad)), f"non-finite gradient at {jax.tree_util.keystr(path)}"
    # Every trained variable must influence the output (catches unused or detached params).
    assert np.any(grad != 0), f"zero gradient at {jax.tree_util.keystr(path)}"

  if cond_matters is not None:
    rolled_y, _ = forward(variables, x, np.roll(cond, 1, axis=0))
    assert cond_matters == (not np.allclose(rolled_y, y, atol=1e-6)), (
        f"output {'ignores' if cond_matters else 'depends on'} cond")
  return variables, y, log_det

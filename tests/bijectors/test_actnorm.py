import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow.bijectors import ActNorm

from .checker import check_bijector, one_hot_cond, unit_inputs


@pytest.mark.parametrize("with_cond", [False, True])
def test_actnorm_is_a_bijector(with_cond):
  cond = one_hot_cond() if with_cond else None
  check_bijector(ActNorm(), unit_inputs(), cond, cond_matters=False if with_cond else None)


def test_data_dependent_init_standardises_each_channel():
  x = 3.0 + 5.0 * jax.random.normal(jax.random.key(0), (16, 6, 6, 4))
  x = x * jnp.array([1.0, 0.1, 10.0, 2.0])
  bijector = ActNorm()
  variables = bijector.init(jax.random.key(1), x)
  y, log_det = bijector.apply(variables, x)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
  expected = -36 * np.sum(np.log(x.std(axis=(0, 1, 2))))
  np.testing.assert_allclose(log_det, np.full(16, expected), rtol=1e-5)


def test_constant_channel_gives_finite_values():
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3)).at[..., 1].set(7.0)
  bijector = ActNorm()
  variables = bijector.init(jax.random.key(1), x)
  assert np.all(np.isfinite(jax.tree.leaves(variables)[0]))
  y, log_det = bijector.apply(variables, x)
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(log_det))
  np.testing.assert_allclose(y[..., 1], 0.0, atol=1e-6)
  # A new batch whose constant channel moves must not be blown up by a huge scale.
  shifted = x.at[..., 1].set(7.5)
  np.testing.assert_allclose(bijector.apply(variables, shifted)[0][..., 1], 0.5, atol=1e-5)
  x_back, _ = bijector.apply(variables, y, method="inverse_and_log_det")
  np.testing.assert_allclose(x_back, x, atol=1e-5)


def test_init_values_are_kept_by_apply():
  bijector = ActNorm()
  variables = bijector.init(jax.random.key(0), unit_inputs())
  other = 10.0 * unit_inputs(seed=5)
  y, _ = bijector.apply(variables, other)
  expected = (other + variables["params"]["bias"]) * jnp.exp(variables["params"]["log_scale"])
  np.testing.assert_allclose(y, expected, rtol=1e-6)

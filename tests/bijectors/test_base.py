import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxflow.bijectors as bijectors
from flaxflow.bijectors import (ActNorm, AffineCoupling, BiParallelLinear, Chain,
                                InvertibleConv1x1, Squeeze, per_pixel_log_det, sum_except_batch,
                                zero_log_det)

from .checker import check_bijector, init_perturbed, one_hot_cond, unit_inputs


def _flow_step():
  return Chain([ActNorm(), InvertibleConv1x1(), AffineCoupling(width=8),
                BiParallelLinear(width=8)])


@pytest.mark.parametrize("with_cond", [False, True])
def test_chain_is_a_bijector(with_cond):
  cond = one_hot_cond() if with_cond else None
  check_bijector(_flow_step(), unit_inputs(), cond, cond_matters=True if with_cond else None)


def test_chain_log_det_is_the_sum_and_inverse_runs_in_reverse():
  x = unit_inputs()
  chain = Chain([Squeeze(), InvertibleConv1x1(), AffineCoupling(width=8)])
  variables = init_perturbed(chain, x)
  y, log_det = jax.jit(chain.apply)(variables, x)
  squeezed, _ = Squeeze().apply({}, x)
  mixed, conv_log_det = InvertibleConv1x1().apply(
      {name: collection["bijectors_1"] for name, collection in variables.items()}, squeezed)
  expected_y, coupling_log_det = AffineCoupling(width=8).apply(
      {"params": variables["params"]["bijectors_2"]}, mixed)
  np.testing.assert_allclose(y, expected_y, atol=1e-5)
  np.testing.assert_allclose(log_det, conv_log_det + coupling_log_det, atol=1e-4)


def test_chain_variables_split_into_params_and_constants():
  variables = jax.eval_shape(_flow_step().init, jax.random.key(0), unit_inputs())
  assert set(variables) == {"params", "constants"}
  assert set(variables["constants"]) == {"bijectors_1"}


def test_log_det_helpers():
  x = jnp.ones((3, 2, 5, 4), jnp.bfloat16)
  assert zero_log_det(x).shape == (3,) and zero_log_det(x).dtype == jnp.float32
  np.testing.assert_array_equal(sum_except_batch(x), np.full(3, 40.0))
  assert sum_except_batch(x).dtype == jnp.float32
  np.testing.assert_allclose(per_pixel_log_det(x, jnp.float32(0.5)), np.full(3, 5.0))


def test_every_exported_name_exists():
  for name in bijectors.__all__:
    assert hasattr(bijectors, name), name
  assert {"ActNorm", "InvertibleConv1x1", "AffineCoupling", "BiParallelLinear", "Bijector",
          "Chain", "Squeeze"} <= set(bijectors.__all__)

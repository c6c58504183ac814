import jax
import numpy as np
import pytest

from flaxflow.bijectors import InvertibleConv1x1

from .checker import check_bijector, one_hot_cond, unit_inputs


@pytest.mark.parametrize("use_lu", [True, False])
@pytest.mark.parametrize("with_cond", [False, True])
def test_invconv_is_a_bijector(use_lu, with_cond):
  cond = one_hot_cond() if with_cond else None
  check_bijector(InvertibleConv1x1(use_lu=use_lu), unit_inputs(), cond,
                 cond_matters=False if with_cond else None)


def _lu_weight(variables):
  params, constants = variables["params"], variables["constants"]
  channels = params["lower"].shape[0]
  lower = np.tril(params["lower"], -1) + np.eye(channels)
  upper = np.triu(params["upper"], 1) + np.diag(constants["sign_s"] * np.exp(params["log_abs_s"]))
  return constants["permutation"] @ lower @ upper


def test_lu_init_is_orthogonal_and_fixed_tensors_are_constants():
  variables = InvertibleConv1x1().init(jax.random.key(0), unit_inputs())
  assert set(variables) == {"params", "constants"}
  assert set(variables["constants"]) == {"permutation", "sign_s"}
  assert set(variables["params"]) == {"lower", "upper", "log_abs_s"}
  weight = _lu_weight(variables)
  np.testing.assert_allclose(weight @ weight.T, np.eye(8), atol=1e-5)
  permutation = variables["constants"]["permutation"]
  np.testing.assert_array_equal(np.sort(permutation, axis=0)[-1], np.ones(8))


def test_forward_is_the_lu_matrix_product():
  x = unit_inputs()
  bijector = InvertibleConv1x1()
  variables = bijector.init(jax.random.key(3), x)
  weight = _lu_weight(variables)
  y, _ = bijector.apply(variables, x)
  np.testing.assert_allclose(y, np.einsum("bhwc,dc->bhwd", x, weight), atol=1e-5)


def test_plain_matrix_init_is_orthogonal():
  variables = InvertibleConv1x1(use_lu=False).init(jax.random.key(0), unit_inputs())
  weight = variables["params"]["kernel"]
  np.testing.assert_allclose(weight @ weight.T, np.eye(8), atol=1e-5)


def test_singular_plain_matrix_is_not_hidden():
  x = unit_inputs()
  bijector = InvertibleConv1x1(use_lu=False)
  variables = bijector.init(jax.random.key(0), x)
  singular = {"params": {"kernel": variables["params"]["kernel"].at[0].set(0.0)}}
  _, log_det = bijector.apply(singular, x)
  assert np.all(log_det == -np.inf)
  x_back, inverse_log_det = bijector.apply(singular, x, method="inverse_and_log_det")
  assert np.all(inverse_log_det == np.inf)
  assert not np.all(np.isfinite(x_back))


def test_missing_constants_is_an_error():
  x = unit_inputs()
  bijector = InvertibleConv1x1()
  variables = bijector.init(jax.random.key(0), x)
  with pytest.raises(Exception, match="constants"):
    bijector.apply({"params": variables["params"]}, x)

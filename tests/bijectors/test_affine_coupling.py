import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow.bijectors import AffineCoupling

from .checker import check_bijector, one_hot_cond, spatial_cond, unit_inputs

CONDS = {"none": None, "one_hot": one_hot_cond(), "spatial": spatial_cond()}


@pytest.mark.parametrize("cond_kind", sorted(CONDS))
@pytest.mark.parametrize("additive", [False, True])
def test_affine_coupling_is_a_bijector(cond_kind, additive):
  cond = CONDS[cond_kind]
  _, y, log_det = check_bijector(AffineCoupling(width=16, additive=additive), unit_inputs(), cond,
                                 cond_matters=None if cond is None else True)
  np.testing.assert_array_equal(y[..., :4], unit_inputs()[..., :4])
  if additive:
    np.testing.assert_array_equal(log_det, 0.0)


def test_odd_channel_count():
  check_bijector(AffineCoupling(width=8), unit_inputs((2, 4, 4, 5)), one_hot_cond(),
                 cond_matters=True)


def test_identity_at_init():
  x = unit_inputs()
  bijector = AffineCoupling(width=16)
  y, log_det = jax.jit(bijector.apply)(jax.jit(bijector.init)(jax.random.key(0), x), x)
  # g starts at zero, so the scale is sigmoid(2) everywhere.
  np.testing.assert_allclose(y[..., 4:], x[..., 4:] * jax.nn.sigmoid(2.0), rtol=1e-6)
  np.testing.assert_allclose(log_det, 64 * np.log(jax.nn.sigmoid(2.0)), rtol=1e-5)


def test_single_channel_is_an_error():
  with pytest.raises(ValueError, match="at least 2 channels"):
    AffineCoupling(width=4).init(jax.random.key(0), unit_inputs((1, 4, 4, 1)))


def test_bfloat16_compute_keeps_float32_log_det_and_exact_inverse():
  check_bijector(AffineCoupling(width=16, dtype=jnp.bfloat16), unit_inputs(), one_hot_cond(),
                 cond_matters=True)

import numpy as np
import pytest

from flaxflow.bijectors import Squeeze

from .checker import check_bijector, one_hot_cond, unit_inputs


@pytest.mark.parametrize("with_cond", [False, True])
def test_squeeze_is_a_bijector(with_cond):
  cond = one_hot_cond() if with_cond else None
  check_bijector(Squeeze(), unit_inputs(), cond, cond_matters=False if with_cond else None)


def test_squeeze_stacks_each_block_channel_last():
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  y, _ = Squeeze().apply({}, x)
  assert y.shape == (2, 2, 2, 12)
  # Output pixel (0, 1) holds input pixels (0..1, 2..3), channel-major then block row/column.
  expected = np.stack([x[0, r, 2 + c, ch] for ch in range(3) for r in range(2) for c in range(2)])
  np.testing.assert_array_equal(y[0, 0, 1], expected)


def test_factor_4_round_trip():
  x = unit_inputs((1, 8, 8, 2))
  bijector = Squeeze(factor=4)
  y, _ = bijector.apply({}, x)
  assert y.shape == (1, 2, 2, 32)
  np.testing.assert_array_equal(bijector.apply({}, y, method="inverse"), x)


def test_indivisible_spatial_shape_is_an_error():
  with pytest.raises(ValueError, match="divisible by 2.*\\(1, 5, 4, 3\\)"):
    Squeeze().apply({}, np.zeros((1, 5, 4, 3), np.float32))


def test_indivisible_channels_in_inverse_is_an_error():
  with pytest.raises(ValueError, match="channels divisible by 4"):
    Squeeze().apply({}, np.zeros((1, 2, 2, 6), np.float32), method="inverse")

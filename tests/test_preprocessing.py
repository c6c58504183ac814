import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow.preprocessing import svd_truncate


def _images(shape=(3, 8, 6, 2), seed=0):
  return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def _channel_ranks(images):
  matrices = np.moveaxis(np.asarray(images, np.float64), -1, 1)
  return np.linalg.matrix_rank(matrices, tol=1e-4)


def test_full_rank_is_the_identity():
  images = _images()
  np.testing.assert_allclose(svd_truncate(images, rank=6), images, atol=1e-5)
  np.testing.assert_allclose(svd_truncate(images, rank=100), images, atol=1e-5)
  np.testing.assert_allclose(svd_truncate(images, energy=1.0), images, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_rank_r_result_has_rank_r_and_is_the_best_approximation(rank):
  images = _images()
  truncated = svd_truncate(images, rank=rank)
  assert truncated.shape == images.shape
  np.testing.assert_array_equal(_channel_ranks(truncated), rank)
  # Eckart-Young: the error is the energy of the dropped singular values, channel by channel.
  singular_values = np.linalg.svd(np.moveaxis(np.asarray(images), -1, 1), compute_uv=False)
  dropped = np.sum(singular_values[..., rank:] ** 2, axis=-1)
  error = np.sum(np.moveaxis(np.asarray(truncated - images), -1, 1) ** 2, axis=(-2, -1))
  np.testing.assert_allclose(error, dropped, rtol=1e-3, atol=1e-6)


def test_channels_and_images_are_truncated_independently():
  images = _images()
  one_image = svd_truncate(images[1:2, ..., 1:], rank=2)
  np.testing.assert_allclose(svd_truncate(images, rank=2)[1:2, ..., 1:], one_image, atol=1e-5)


def test_energy_keeps_the_fewest_values_reaching_the_fraction():
  # A channel with singular values 3, 2, 1 (energies 9, 4, 1 of 14).
  u, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 3)))
  v, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 3)))
  channel = (u * np.array([3.0, 2.0, 1.0])) @ v.T
  images = channel[None, :, :, None].astype(np.float32)
  cases = [(0.5, 1), (9 / 14 - 1e-4, 1), (9 / 14 + 1e-4, 2), (13 / 14 - 1e-4, 2), (0.95, 3)]
  for energy, expected_rank in cases:
    truncated = svd_truncate(images, energy=energy)
    assert _channel_ranks(truncated)[0, 0] == expected_rank, energy


def test_jit_with_static_rank_and_traced_energy():
  images = _images()
  by_rank = jax.jit(functools.partial(svd_truncate, rank=2))
  np.testing.assert_allclose(by_rank(images), svd_truncate(images, rank=2), atol=1e-5)
  by_energy = jax.jit(lambda images, energy: svd_truncate(images, energy=energy))
  for energy in (0.6, 0.99):
    np.testing.assert_allclose(by_energy(images, energy), svd_truncate(images, energy=energy),
                               atol=1e-5)


def test_zero_image_stays_zero():
  zeros = jnp.zeros((1, 4, 4, 1))
  np.testing.assert_array_equal(svd_truncate(zeros, energy=0.9), zeros)
  np.testing.assert_array_equal(svd_truncate(zeros, rank=1), zeros)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of rank and energy"),
    ({"rank": 2, "energy": 0.5}, "exactly one of rank and energy"),
    ({"rank": 0}, "positive Python int"),
    ({"rank": 1.5}, "positive Python int"),
    ({"energy": 1.5}, r"\(0, 1\]"),
    ({"energy": 0.0}, r"\(0, 1\]"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    svd_truncate(_images(), **kwargs)


def test_non_nhwc_input_is_an_error():
  with pytest.raises(ValueError, match="NHWC"):
    svd_truncate(jnp.zeros((4, 4, 1)), rank=1)

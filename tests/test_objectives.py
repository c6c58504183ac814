import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow import models, objectives
from tiny_models import perturb_params


@pytest.mark.parametrize("n_bits", [8, 5])
def test_dequantize_stays_in_its_bin_and_postprocess_inverts_it(n_bits):
  images = jnp.arange(256, dtype=jnp.uint8).reshape(1, 16, 16, 1)
  x = objectives.dequantize(jax.random.PRNGKey(0), images, n_bits)
  assert x.dtype == jnp.float32 and float(x.min()) >= -0.5 and float(x.max()) < 0.5
  expected = (np.asarray(images) >> (8 - n_bits)) << (8 - n_bits)
  np.testing.assert_array_equal(objectives.postprocess(x, n_bits), expected)
  centres = objectives.dequantize(None, images, n_bits)
  np.testing.assert_allclose(centres * 2 ** n_bits % 1, 0.5, atol=1e-4)


def test_bits_per_dim_of_a_uniform_density_is_n_bits():
  # The uniform density on [-0.5, 0.5)^D has log p = 0, so each dimension costs exactly n_bits.
  np.testing.assert_allclose(objectives.bits_per_dim(jnp.zeros(2), 12, 8), [8.0, 8.0])
  np.testing.assert_allclose(objectives.bits_per_dim(jnp.zeros(1), 12, 5), [5.0])


def test_bad_n_bits_is_rejected():
  with pytest.raises(ValueError, match="n_bits=9"):
    objectives.dequantize(None, jnp.zeros((1, 2, 2, 1), jnp.uint8), 9)


def test_truncate_images_truncates_the_integer_image_and_requantises():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 6, 6, 2)).astype(np.uint8)
  n_bits = 4
  truncated = np.asarray(objectives.truncate_images(images, 2, n_bits))
  bins = truncated >> (8 - n_bits)
  assert truncated.dtype == np.uint8 and bins.min() >= 0 and bins.max() < 2 ** n_bits
  np.testing.assert_array_equal(truncated, bins << (8 - n_bits))  # On the n-bit grid.
  integer = (images >> (8 - n_bits)).astype(np.float64)
  u, s, vt = np.linalg.svd(np.moveaxis(integer, -1, 1), full_matrices=False)
  expected = np.moveaxis(np.einsum("...ik,...k,...kj->...ij", u[..., :2], s[..., :2],
                                   vt[..., :2, :]), 1, -1)
  np.testing.assert_array_equal(bins, np.clip(np.round(expected), 0, 2 ** n_bits - 1))
  full = np.asarray(objectives.truncate_images(images, 6, n_bits))
  np.testing.assert_array_equal(full, (images >> (8 - n_bits)) << (8 - n_bits))


def test_zero_deepest_weight_adds_the_error_of_decoding_with_z1_zeroed():
  model = models.create({"name": "glow", "image_shape": (4, 4, 1), "num_classes": 2, "levels": 2,
                         "steps_per_level": 1, "width": 4})
  images = np.random.default_rng(0).integers(0, 256, (4, 4, 4, 1)).astype(np.uint8)
  labels = jnp.array([0, 1, 0, 1])
  rng = jax.random.PRNGKey(1)
  x = objectives.dequantize(rng, images, 8)
  variables = model.init(rng, x, labels, method="log_prob")
  plain, _ = objectives.loss_and_metrics(model, variables, images, labels, rng)
  loss, metrics = objectives.loss_and_metrics(model, variables, images, labels, rng,
                                              zero_deepest_weight=2.0)
  latents, _ = model.apply(variables, x, labels, method="encode")
  decoded = model.apply(variables, latents[:-1] + (jnp.zeros_like(latents[-1]),), labels,
                        method="decode")
  error = np.mean(np.square(np.asarray(decoded) - np.asarray(x)))
  assert error > 1e-4  # z1 carries part of the image: zeroing it costs something.
  np.testing.assert_allclose(metrics["zeroed_z1_error"], error, rtol=1e-4)
  np.testing.assert_allclose(loss, plain + 2.0 * error, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], loss)


def test_the_classifiers_zeroed_decoding_zeroes_fs_z1():
  model = models.create({"name": "classifier", "image_shape": (4, 4, 1), "num_classes": 3,
                         "levels": 2, "steps_per_level": 1, "width": 4, "h_steps": 1,
                         "h_width": 4})
  x = objectives.dequantize(jax.random.PRNGKey(0), np.full((2, 4, 4, 1), 90, np.uint8), 8)
  variables = model.init(jax.random.PRNGKey(2), x, method="class_logits")
  latents, _ = model.apply(variables, x, method="encode")  # f's latents: no labels, no h.
  expected = model.apply(variables, latents[:-1] + (jnp.zeros_like(latents[-1]),),
                         method="decode")
  np.testing.assert_allclose(model.apply(variables, x, jnp.array([0, 2]),
                                         method="decode_without_deepest"), expected, atol=1e-6)


def test_marginal_metrics_of_a_class_conditional_flow_match_their_definitions():
  model = models.create({"name": "bplf", "image_shape": (4, 4, 1), "num_classes": 3, "levels": 2,
                         "steps_per_level": 1, "width": 4})
  images = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 1)).astype(np.uint8)
  labels = jnp.array([0, 1, 2, 2, 1, 0])
  rng = jax.random.PRNGKey(1)
  x = objectives.dequantize(rng, images, 8)
  variables = perturb_params(model.init(rng, x, labels, method="log_prob"), seed=0)
  _, metrics = objectives.loss_and_metrics(model, variables, images, labels, rng,
                                           with_marginal=True)
  per_class = np.stack([model.apply(variables, x, jnp.full_like(labels, c), method="log_prob")
                        for c in range(3)], axis=-1)
  bits = lambda log_prob: np.mean(objectives.bits_per_dim(log_prob, 16, 8))
  np.testing.assert_allclose(metrics["bits_per_dim_given_label"],
                             bits(per_class[np.arange(6), labels]), rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"],
                             bits(jax.nn.logsumexp(per_class, axis=-1) - np.log(3)), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(per_class.argmax(-1) == labels))
  plain, _ = objectives.loss_and_metrics(model, variables, images, labels, rng)
  np.testing.assert_allclose(metrics["loss"], plain, rtol=1e-5)

"""The learned Gaussian priors: standard normal at initialisation, and class-conditional offsets
that can differ at every position (a class's expression sits in some places only)."""

import jax
import jax.numpy as jnp
import numpy as np

from flaxflow.distributions import SplitPrior, TopPrior

RNG = jax.random.PRNGKey(0)
ONE_HOTS = jax.nn.one_hot(jnp.arange(3), 3)


def with_random_label_offsets(variables):
  params = dict(variables["params"])
  kernel = params["label_offset"]["kernel"]
  params["label_offset"] = {
      "kernel": jax.random.normal(RNG, kernel.shape), "bias": params["label_offset"]["bias"]}
  return {"params": params}


def test_a_fresh_prior_is_standard_normal_for_every_class():
  top = TopPrior((2, 2, 4))
  mean, log_scale = top.apply(top.init(RNG, 3, ONE_HOTS), 3, ONE_HOTS)
  split = SplitPrior()
  h = jax.random.normal(RNG, (3, 2, 2, 4))
  split_mean, split_log_scale = split.apply(split.init(RNG, h, ONE_HOTS), h, ONE_HOTS)
  for array in (mean, log_scale, split_mean, split_log_scale):
    np.testing.assert_array_equal(array, 0.0)


def test_the_label_offsets_are_a_map_per_class():
  top = TopPrior((2, 2, 4))
  variables = with_random_label_offsets(top.init(RNG, 3, ONE_HOTS))
  mean, log_scale = top.apply(variables, 3, ONE_HOTS)
  kernel = np.asarray(variables["params"]["label_offset"]["kernel"]).reshape(3, 2, 2, 8)
  np.testing.assert_allclose(jnp.concatenate([mean, log_scale], -1), kernel, rtol=1e-6)
  # Not one value per channel broadcast over space: positions of one class differ.
  assert float(jnp.abs(mean[:, 0, 0] - mean[:, 1, 1]).min()) > 0

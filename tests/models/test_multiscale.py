"""Model log-likelihoods against brute-force change of variables on tiny images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow.distributions import gaussian_log_prob
from tiny_models import build

from .helpers import init, tiny_images, with_log_abs_det

RNG = jax.random.PRNGKey(0)

FLOWS = [
    ("glow", {}),
    ("glow", {"num_classes": 3}),
    ("glow", {"additive": True, "use_lu": False}),
    ("bplf", {}),
    ("bplf", {"num_classes": 3}),
    ("bplf", {"num_classes": 3, "g_variant": "3x3-1x1", "num_parts": 3, "actnorm": True}),
]


def labels_for(model, batch):
  return jnp.arange(batch) % model.num_classes if model.num_classes else None


def whiten(module, x, cond):
  """Maps one image to i.i.d. standard-normal noise through the model's parts, flattened.

  Each latent z with prior N(mean, scale) becomes (z - mean) / scale, so the whole map is a
  bijection whose density change gives log p(x) = log N(eps; 0, I) + log|det d eps / dx|.
  """
  h, noise = x, []
  for level in range(module.levels):
    h, _ = module.squeeze.forward_and_log_det(h)
    h, _ = module.level_steps[level].forward_and_log_det(h, module._step_cond(cond))
    if level < module.levels - 1:
      h, z = jnp.split(h, 2, axis=-1)
      mean, log_scale = module.split_priors[level](h, cond)
      noise.append((z - mean) * jnp.exp(-log_scale))
  mean, log_scale = module.top_prior(x.shape[0], cond)
  noise.append((h - mean) * jnp.exp(-log_scale))
  return jnp.concatenate([n.reshape(-1) for n in noise])


def brute_force_log_prob(model, variables, x, labels):
  cond = model.one_hot(labels) if model.num_classes else None

  def noise_of_one(xi, ci):
    ci = None if ci is None else ci[None]
    return model.apply(variables, xi[None], ci, method=whiten)

  def log_prob_of_one(xi, ci):
    jacobian = jax.jacfwd(noise_of_one)(xi, ci)
    eps = noise_of_one(xi, ci)[None]
    return jacobian, gaussian_log_prob(eps, jnp.zeros_like(eps), jnp.zeros_like(eps))[0]

  return with_log_abs_det(*jax.jit(jax.vmap(log_prob_of_one))(x, cond))


def initialised_on_tiny_images(name, overrides):
  """The model, a tiny batch, labels for it (None if unconditional) and variables."""
  model = build(name, steps=2, **overrides)
  x = tiny_images(RNG)
  labels = labels_for(model, x.shape[0])
  return model, x, labels, init(model, x, labels)


@pytest.mark.parametrize("name,overrides", FLOWS)
def test_log_prob_matches_change_of_variables(name, overrides):
  model, x, labels, variables = initialised_on_tiny_images(name, overrides)
  log_prob = jax.jit(lambda v, x: model.apply(v, x, labels, method="log_prob"))(variables, x)
  assert log_prob.shape == (x.shape[0],) and log_prob.dtype == jnp.float32
  np.testing.assert_allclose(log_prob, brute_force_log_prob(model, variables, x, labels),
                             rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name,overrides", FLOWS)
def test_decode_inverts_encode_and_sampling_is_finite(name, overrides):
  model, x, labels, variables = initialised_on_tiny_images(name, overrides)
  latents, log_det = jax.jit(lambda v, x: model.apply(v, x, labels, method="encode"))(variables, x)
  assert len(latents) == model.levels and log_det.shape == (x.shape[0],)
  decoded = jax.jit(lambda v, z: model.apply(v, z, labels, method="decode"))(variables, latents)
  np.testing.assert_allclose(decoded, x, atol=1e-4)
  samples = jax.jit(
      lambda v, r: model.apply(v, r, x.shape[0], labels, 0.7, method="sample"))(variables, RNG)
  assert samples.shape == x.shape and bool(jnp.all(jnp.isfinite(samples)))


def test_svd_rank_does_not_truncate_inside_the_flow():
  # The data are truncated on the discrete image before dequantisation
  # (`objectives.model_input`); the flow itself is the same density with or without svd_rank.
  model = build("bplf", svd_rank=1)
  x = tiny_images(RNG)
  variables = init(model, x, None)
  assert model.truncates_input
  np.testing.assert_allclose(model.apply(variables, x, method="log_prob"),
                             build("bplf").apply(variables, x, method="log_prob"), rtol=1e-6)


@pytest.mark.parametrize("gradient, scan_unroll",
                         [("save_products", 1), ("remat", 1), ("reversible", 1), ("plain", 3),
                          ("reversible", 2)])
def test_recomputing_or_unrolled_gradients_equal_plain_ones(gradient, scan_unroll):
  x = tiny_images(RNG, (4, 8, 8, 1))
  labels = jnp.arange(4) % 3
  plain = build("bplf", num_classes=3, image_shape=(8, 8, 1), steps_per_level=3,
                gradient="plain")
  variables = init(plain, x, labels)
  recomputing = build("bplf", num_classes=3, image_shape=(8, 8, 1), steps_per_level=3,
                      gradient=gradient, scan_unroll=scan_unroll)

  def grads(model):
    loss = lambda params, x: -jnp.mean(
        model.apply({**variables, "params": params}, x, labels, method="log_prob"))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables["params"], x)

  (plain_loss, plain_grads), (loss, recomputed_grads) = grads(plain), grads(recomputing)
  np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4),
               recomputed_grads, plain_grads)


def test_saving_only_products_stores_less_than_plain_autodiff():
  # On CPU a 3x3 convolution multiplies 9 windows of its input; plain autodiff keeps those
  # windows of every step for the backward pass, "save_products" only the products' outputs.
  x = tiny_images(RNG, (8, 16, 16, 1))
  labels = jnp.arange(8) % 3
  sizes = dict(num_classes=3, image_shape=(16, 16, 1), steps_per_level=4, width=32)
  variables = init(build("bplf", **sizes), x, labels)

  def temporary_bytes(gradient):
    model = build("bplf", gradient=gradient, **sizes)
    loss = lambda params: -jnp.mean(
        model.apply({**variables, "params": params}, x, labels, method="log_prob"))
    compiled = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temporary_bytes("save_products") < 0.6 * temporary_bytes("plain")


@pytest.mark.parametrize("name", ["glow", "bplf", "classifier"])
def test_bfloat16_compute_keeps_float32_likelihoods_and_gradients(name):
  x = tiny_images(RNG, (4, 8, 8, 1))
  labels = jnp.arange(4) % 3
  overrides = dict(image_shape=(8, 8, 1), num_classes=3)
  full = build(name, steps=2, **overrides)
  variables = init(full, x, labels)
  half = build(name, steps=2, dtype="bfloat16", **overrides)  # As a config names it.
  loss = lambda model, params: -jnp.mean(
      model.apply({**variables, "params": params}, x, labels, method="log_prob"))
  half_loss, half_grads = jax.jit(jax.value_and_grad(lambda p: loss(half, p)))(variables["params"])
  assert half_loss.dtype == jnp.float32
  assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
             for g in jax.tree.leaves(half_grads))
  np.testing.assert_allclose(half_loss, jax.jit(lambda p: loss(full, p))(variables["params"]),
                             rtol=1e-2)


def test_bad_configuration_and_input_errors():
  with pytest.raises(ValueError, match="divisible"):
    build("glow", image_shape=(6, 6, 1)).init(RNG, jnp.zeros((1, 6, 6, 1)), method="log_prob")
  with pytest.raises(ValueError, match="expected one of"):
    build("glow", gradient="sometimes").init(RNG, jnp.zeros((1, 4, 4, 1)), method="log_prob")
  with pytest.raises(ValueError, match="unroll=0"):
    build("glow", scan_unroll=0).init(RNG, jnp.zeros((1, 4, 4, 1)), method="log_prob")
  model = build("glow", num_classes=3)
  with pytest.raises(ValueError, match="pass labels"):
    model.init(RNG, jnp.zeros((1, 4, 4, 1)), method="log_prob")
  with pytest.raises(ValueError, match="image_shape"):
    build("glow").init(RNG, jnp.zeros((1, 8, 8, 1)), method="log_prob")
  with pytest.raises(ValueError, match="model name"):
    build("realnvp")

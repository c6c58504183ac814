"""The conditional-Glow classifier: logits, likelihoods and inverses on tiny images."""

import jax
import jax.numpy as jnp
import numpy as np

from flaxflow.distributions import gaussian_log_prob
from flaxflow import objectives
from tiny_models import build

from .helpers import init, tiny_images, with_log_abs_det

RNG = jax.random.PRNGKey(0)

NUM_CLASSES = 3


def whiten(module, x, cond):
  """x -> i.i.d. standard-normal noise through f, h(., y) and the priors, flattened."""
  flow, h, noise = module.flow, x, []
  for level in range(flow.levels):
    h, _ = flow.squeeze.forward_and_log_det(h)
    h, _ = flow.level_steps[level].forward_and_log_det(h, None)
    if level < flow.levels - 1:
      h, z = jnp.split(h, 2, axis=-1)
      mean, log_scale = flow.split_priors[level](h, None)
      noise.append((z - mean) * jnp.exp(-log_scale))
  z1_prime, _ = module.conditional_flow.forward_and_log_det(h, cond)
  mean, log_scale = module.top_prior(x.shape[0], None)
  noise.append((z1_prime - mean) * jnp.exp(-log_scale))
  return jnp.concatenate([n.reshape(-1) for n in noise])


def brute_force_log_prob(model, variables, x, labels):
  cond = jax.nn.one_hot(labels, NUM_CLASSES)

  def log_prob_of_one(xi, ci):
    noise_of = lambda xi: model.apply(variables, xi[None], ci[None], method=whiten)
    jacobian = jax.jacfwd(noise_of)(xi)
    eps = noise_of(xi)[None]
    return jacobian, gaussian_log_prob(eps, jnp.zeros_like(eps), jnp.zeros_like(eps))[0]

  return with_log_abs_det(*jax.jit(jax.vmap(log_prob_of_one))(x, cond))


def setup_classifier(rng):
  model = build("classifier", steps=2)
  x = tiny_images(rng)
  labels = jnp.array([0, 2, 1])
  variables = init(model, x, labels)
  variables = {**variables, "params": {**variables["params"],
                                       "class_prior_logits": jnp.array([0.3, -0.2, 0.1])}}
  return model, variables, x, labels


def test_log_prob_matches_change_of_variables():
  model, variables, x, labels = setup_classifier(RNG)
  log_prob = jax.jit(lambda v, x: model.apply(v, x, labels, method="log_prob"))(variables, x)
  expected = brute_force_log_prob(model, variables, x, labels)
  np.testing.assert_allclose(log_prob, expected, rtol=1e-4, atol=1e-3)


def test_logits_are_class_by_class_likelihood_plus_prior():
  model, variables, x, _ = setup_classifier(RNG)
  logits = jax.jit(lambda v, x: model.apply(v, x, method="class_logits"))(variables, x)
  log_prior = jax.nn.log_softmax(jnp.array([0.3, -0.2, 0.1]))
  for i in range(NUM_CLASSES):
    class_i = jnp.full((x.shape[0],), i)
    expected = model.apply(variables, x, class_i, method="log_prob") + log_prior[i]
    np.testing.assert_allclose(logits[:, i], expected, rtol=1e-5, atol=1e-4)
  marginal = model.apply(variables, x, method="log_prob")
  np.testing.assert_allclose(marginal, jax.nn.logsumexp(logits, axis=-1), rtol=1e-6)


def test_encode_decode_and_sample():
  model, variables, x, labels = setup_classifier(RNG)
  for given in (labels, None):
    latents, _ = model.apply(variables, x, given, method="encode")
    np.testing.assert_allclose(model.apply(variables, latents, given, method="decode"), x,
                               atol=1e-4)
  samples = model.apply(variables, RNG, 4, jnp.array([0, 1, 2, 0]), 0.8, method="sample")
  assert samples.shape == (4, 4, 4, 1) and bool(jnp.all(jnp.isfinite(samples)))


def test_loss_combines_conditional_and_class_losses():
  model, variables, x, labels = setup_classifier(RNG)
  images = ((np.asarray(x) + 0.5) * 255).astype(np.uint8)
  loss, metrics = objectives.loss_and_metrics(model, variables, images, labels, RNG,
                                              class_loss_weight=0.3)
  expected = metrics["bits_per_dim_given_label"] + 0.3 * metrics["class_loss"]
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  x_dequantized = objectives.dequantize(RNG, images, 8)
  logits = model.apply(variables, x_dequantized, method="class_logits")
  np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(logits, -1) == labels))
  grads = jax.grad(lambda p: objectives.loss_and_metrics(
      model, {**variables, "params": p}, images, labels, RNG)[0])(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))

"""The GAN losses against their formulas, and the guarded update of several networks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxflow.gan import adversarial

LOGITS = (jnp.array([[2.0, -1.0], [0.5, 0.0]]), jnp.array([[-3.0, 1.0], [0.0, 0.25]]))


def log_sigmoid(x):
  return -np.log1p(np.exp(-np.asarray(x, np.float64)))


@pytest.mark.parametrize("kind, d_expected, g_expected", [
    ("non_saturating",
     lambda r, f: -log_sigmoid(r).mean() - log_sigmoid(-f).mean(),
     lambda f: -log_sigmoid(f).mean()),
    ("least_squares", lambda r, f: ((r - 1) ** 2).mean() + (f ** 2).mean(),
     lambda f: ((f - 1) ** 2).mean()),
    ("hinge", lambda r, f: np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(),
     lambda f: -f.mean()),
])
def test_losses_match_their_formulas(kind, d_expected, g_expected):
  real, fake = (np.asarray(x) for x in LOGITS)
  np.testing.assert_allclose(adversarial.discriminator_loss(*LOGITS, kind),
                             d_expected(real, fake), rtol=1e-5)
  np.testing.assert_allclose(adversarial.generator_loss(LOGITS[1], kind), g_expected(fake),
                             rtol=1e-5)


def test_an_unknown_loss_kind_names_the_choices():
  with pytest.raises(ValueError, match="non_saturating, least_squares, hinge"):
    adversarial.generator_loss(LOGITS[1], "wasserstein")


def test_the_non_saturating_generator_gradient_does_not_vanish_when_d_wins():
  # D is sure the fake is fake (logit -20): log(1 - D) would give a gradient of ~2e-9.
  gradient = jax.grad(adversarial.generator_loss)(jnp.array([-20.0]))
  assert abs(float(gradient[0])) > 0.99


def quadratic_state():
  params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
  optimizers = {"a": optax.sgd(0.5), "b": optax.sgd(0.5)}
  return adversarial.init_state(params, optimizers), optimizers


def test_update_networks_moves_only_the_named_networks_by_their_gradients():
  state, optimizers = quadratic_state()
  loss_fn = lambda params: (sum(jnp.sum(p ** 2) for p in params.values()), {})
  updated, loss, metrics = jax.jit(
      lambda s: adversarial.update_networks(s, ["a"], loss_fn, optimizers))(state)
  np.testing.assert_allclose(loss, 5.0)
  np.testing.assert_allclose(updated.params["a"], [0.0, 0.0])  # x - 0.5 * 2x
  np.testing.assert_array_equal(updated.params["b"], state.params["b"])
  assert int(metrics["skipped/a"]) == 0 and "skipped/b" not in metrics


def test_a_non_finite_loss_skips_every_named_network_and_is_counted():
  state, optimizers = quadratic_state()
  loss_fn = lambda params: (jnp.sum(params["a"]) * jnp.nan + jnp.sum(params["b"]), {})
  updated, _, metrics = adversarial.update_networks(state, ["a", "b"], loss_fn, optimizers)
  jax.tree.map(np.testing.assert_array_equal, updated.params, state.params)
  metrics = adversarial.step_metrics(updated, metrics)
  assert int(metrics["skipped"]) == 2 and int(metrics["consecutive_skipped"]) == 1
  assert int(updated.skips["a"].total) == int(updated.skips["b"].total) == 1

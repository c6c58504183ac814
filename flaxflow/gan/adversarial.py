"""What every adversarial model's train step shares: a state of several networks, each with its
own optimizer and skip count, the GAN losses, and the guarded update of one network.

A GAN step updates its networks in order (the discriminator, then the generator side, as pix2pix
and StarGAN do); each update is skipped on its own when its loss or gradient is not finite
(`flaxflow.optimization.apply_if_finite`), so one network's bad step never enters the state.
"""

from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from flaxflow import optimization

Array = jax.Array
LOSS_KINDS = ("non_saturating", "least_squares", "hinge")


@flax.struct.dataclass
class AdversarialState:
  """A GAN's train state: `params`, `opt_states` and `skips` are dicts keyed by network name;
  `extra` holds whatever else a model keeps between steps (a history buffer, class centres), so
  that a checkpoint holds all of it and resume is exact."""
  step: Array
  params: Dict[str, Any]
  opt_states: Dict[str, Any]
  skips: Dict[str, optimization.SkipCount]
  extra: Any = None


def init_state(params: Mapping[str, Any], optimizers: Mapping[str, optax.GradientTransformation],
               extra: Any = None) -> AdversarialState:
  """A fresh state of the networks `params`, one optimizer per network."""
  return AdversarialState(
      step=jnp.zeros((), jnp.int32), params=dict(params),
      opt_states={name: optimizers[name].init(params[name]) for name in params},
      skips={name: optimization.SkipCount.zero() for name in params}, extra=extra)


def discriminator_loss(real_logits: Array, fake_logits: Array, kind: str = "non_saturating"
                       ) -> Array:
  """The discriminator's loss on real and generated logits (any shape, e.g. PatchGAN maps).

  non_saturating: binary cross-entropy; least_squares: (D(x) - 1)^2 + D(G)^2; hinge: the
  hinge loss of SAGAN.
  """
  if kind == "non_saturating":
    return (optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)).mean()
            + optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)).mean())
  if kind == "least_squares":
    return jnp.mean((real_logits - 1.0) ** 2) + jnp.mean(fake_logits ** 2)
  if kind == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
  raise ValueError(f"adversarial loss {kind!r}: expected one of {', '.join(LOSS_KINDS)}")


def generator_loss(fake_logits: Array, kind: str = "non_saturating") -> Array:
  """The generator's adversarial loss on the discriminator's logits of generated images;
  non_saturating is -log D(G(z)), whose gradient does not vanish while D wins."""
  if kind == "non_saturating":
    return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean()
  if kind == "least_squares":
    return jnp.mean((fake_logits - 1.0) ** 2)
  if kind == "hinge":
    return -jnp.mean(fake_logits)
  raise ValueError(f"adversarial loss {kind!r}: expected one of {', '.join(LOSS_KINDS)}")


LossFn = Callable[[Dict[str, Any]], Tuple[Array, Dict[str, Array]]]


def update_networks(state: AdversarialState, names: Sequence[str], loss_fn: LossFn,
                    optimizers: Mapping[str, optax.GradientTransformation]
                    ) -> Tuple[AdversarialState, Array, Dict[str, Array]]:
  """One guarded update of the networks `names` together (e.g. G and E on one loss).

  `loss_fn(params_of_names) -> (loss, aux_metrics)` where `params_of_names` is {name: params}
  for `names`. Each network is updated by its own optimizer and skipped on its own (a
  non-finite loss skips all of them). Returns (state, loss, metrics), the metrics with
  "grad_norm/<name>" and "skipped/<name>" for each network.
  """
  trained = {name: state.params[name] for name in names}
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
  params, opt_states, skips = dict(state.params), dict(state.opt_states), dict(state.skips)
  metrics = dict(metrics)
  for name in names:
    params[name], opt_states[name], skips[name], update = optimization.apply_if_finite(
        optimizers[name], state.params[name], state.opt_states[name], grads[name], loss,
        state.skips[name])
    metrics[f"grad_norm/{name}"] = update["grad_norm"]
    metrics[f"skipped/{name}"] = update["skipped"]
  return state.replace(params=params, opt_states=opt_states, skips=skips), loss, metrics


def step_metrics(state: AdversarialState, metrics: Mapping[str, Array]) -> Dict[str, Array]:
  """`metrics` with what the loop reads every step ("skipped", "consecutive_skipped"), from the
  "skipped/<name>" entries of `update_networks`."""
  skipped = {name: metrics[f"skipped/{name}"] for name in state.skips}
  return {**metrics, **optimization.skip_metrics(state.skips, skipped)}

"""Optimizers, learning-rate schedules, and the guarded update that every network's step uses.

A model family's train step (`flaxflow.loop.Task`) updates one or several networks, each with its
own optimizer. `apply_if_finite` makes one such update and keeps the network's parameters and
optimizer state as they were when the loss or the gradient is not finite, counting the skip in a
`SkipCount` of its own, so that one network's bad step does not block the others. A step whose
loss and gradient are finite can still make the parameters or optimizer state non-finite (a NaN or
huge learning rate): that update is skipped too, so a non-finite value never enters the state.
"""

import math
from typing import Any, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from flaxflow import config_checks

Array = jax.Array

OPTIMIZERS = {"adam": optax.adam, "adamax": optax.adamax}
SCHEDULES = ("constant", "cosine", "staircase")


def check_optimizer_config(optimizer_config: ml_collections.ConfigDict) -> None:
  """Names the field of a learning rate, warm-up, clipping norm or moment decay out of range."""
  config = ml_collections.ConfigDict({"optimizer": optimizer_config})
  config_checks.positive_finite(config, "optimizer.learning_rate", "optimizer.eps")
  config_checks.non_negative_int(config, "optimizer.warmup_steps")
  config_checks.in_interval(config, "optimizer.grad_clip_norm", 0, math.inf)
  for decay in ("optimizer.b1", "optimizer.b2"):
    config_checks.in_interval(config, decay, 0, 1)
  if "weight_decay" in optimizer_config:
    config_checks.in_interval(config, "optimizer.weight_decay", 0, math.inf)
  if optimizer_config.schedule == "staircase":
    config_checks.in_interval(config, "optimizer.decay_rate", 0, 1)
    config_checks.positive_int(config, "optimizer.decay_every_epochs")


def learning_rate_schedule(optimizer_config: ml_collections.ConfigDict, num_steps: int,
                           steps_per_epoch: Optional[int] = None) -> optax.Schedule:
  """Linear warm-up from 0 to `learning_rate`, then constant, cosine decay to 0 at `num_steps`, or
  staircase: times `decay_rate` every `decay_every_epochs` epochs of `steps_per_epoch`."""
  learning_rate = optimizer_config.learning_rate
  warmup_steps = optimizer_config.warmup_steps
  if optimizer_config.schedule not in SCHEDULES:
    raise ValueError(f"optimizer.schedule={optimizer_config.schedule!r}: expected one of "
                     f"{SCHEDULES}")
  if optimizer_config.schedule == "constant":
    after_warmup = optax.constant_schedule(learning_rate)
  elif optimizer_config.schedule == "staircase":
    if not steps_per_epoch:
      raise ValueError("optimizer.schedule='staircase' needs the number of steps per epoch")
    after_warmup = optax.exponential_decay(
        learning_rate, optimizer_config.decay_every_epochs * steps_per_epoch,
        optimizer_config.decay_rate, staircase=True)
  else:
    after_warmup = optax.cosine_decay_schedule(learning_rate, max(1, num_steps - warmup_steps))
  if warmup_steps <= 0:
    return after_warmup
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after_warmup], [warmup_steps])


def make_optimizer(optimizer_config: ml_collections.ConfigDict, num_steps: int,
                   steps_per_epoch: Optional[int] = None) -> optax.GradientTransformation:
  """Adam or Adamax with warm-up, after clipping gradients to `grad_clip_norm` (0: no clipping).

  An optional `weight_decay` adds that multiple of the parameters to the gradient before Adam
  (an L2 penalty, as torch.optim.Adam's weight_decay does, not AdamW's decoupled decay).
  """
  check_optimizer_config(optimizer_config)
  if optimizer_config.name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={optimizer_config.name!r}: expected one of "
                     f"{sorted(OPTIMIZERS)}")
  optimizer = OPTIMIZERS[optimizer_config.name](
      learning_rate_schedule(optimizer_config, num_steps, steps_per_epoch),
      b1=optimizer_config.b1, b2=optimizer_config.b2, eps=optimizer_config.eps)
  if optimizer_config.get("weight_decay", 0.0) > 0:
    optimizer = optax.chain(optax.add_decayed_weights(optimizer_config.weight_decay), optimizer)
  if optimizer_config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optimizer_config.grad_clip_norm), optimizer)
  return optimizer


@flax.struct.dataclass
class SkipCount:
  """Updates of one network skipped for a non-finite loss or gradient: in all and in a row."""
  total: Array
  consecutive: Array

  @classmethod
  def zero(cls) -> "SkipCount":
    return cls(total=jnp.zeros((), jnp.int32), consecutive=jnp.zeros((), jnp.int32))

  def after(self, skipped: Array) -> "SkipCount":
    skipped = skipped.astype(jnp.int32)
    return SkipCount(total=self.total + skipped, consecutive=(self.consecutive + 1) * skipped)


def select(condition: Array, if_true: Any, if_false: Any) -> Any:
  """`if_true` where the scalar `condition` holds, else `if_false`, leaf by leaf."""
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def tree_is_finite(tree: Any) -> Array:
  """Whether every floating-point leaf of `tree` is finite everywhere (a scalar bool)."""
  checks = [jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def apply_if_finite(optimizer: optax.GradientTransformation, params: Any, opt_state: Any,
                    grads: Any, loss: Array, skips: SkipCount
                    ) -> Tuple[Any, Any, SkipCount, Dict[str, Array]]:
  """One optimizer update, or none when `loss`, the gradient, or the updated parameters or optimizer
  state are not finite.

  Returns (params, opt_state, skips, metrics{"grad_norm", "skipped"}); callers that update more
  (e.g. an average of the parameters) keep it too where `metrics["skipped"]` is 1.
  """
  grad_norm = optax.tree.norm(grads)
  updates, new_opt_state = optimizer.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & tree_is_finite((new_params, new_opt_state)))
  params, opt_state = select(finite, (new_params, new_opt_state), (params, opt_state))
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  return params, opt_state, skips.after(skipped), {"grad_norm": grad_norm, "skipped": skipped}


def skip_metrics(skips: Dict[str, SkipCount], skipped: Dict[str, Array]) -> Dict[str, Array]:
  """The metrics the loop reads from every step: "skipped", the networks whose update this step
  skipped, and "consecutive_skipped", the longest run of skips of any one network; with several
  networks also each network's "skipped/<name>"."""
  metrics = {"skipped": sum(skipped.values()),
             "consecutive_skipped": jnp.max(jnp.stack([count.consecutive
                                                       for count in skips.values()]))}
  if len(skipped) > 1:
    metrics.update({f"skipped/{name}": value for name, value in skipped.items()})
  return metrics


def count_parameters(params: Any) -> int:
  return int(sum(leaf.size for leaf in jax.tree.leaves(params)))

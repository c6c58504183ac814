"""The train state, the optimizer, the jitted SPMD train step, evaluation, sampling, and the loop.

The train state is replicated over the device mesh and every batch is split along its "data" axis
(`flaxflow.parallel`), so one `jax.jit`-compiled step serves one device, many devices and many hosts
alike. A step whose loss or gradient is not finite leaves the parameters, optimizer state and EMA as
they were; the skip is counted, and too many in a row stop the run.
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from flaxflow import checkpointing, images, objectives, parallel

Array = jax.Array
Batch = Mapping[str, Array]
LossFn = Callable[..., Tuple[Array, Dict[str, Array]]]

OPTIMIZERS = {"adam": optax.adam, "adamax": optax.adamax}
SCHEDULES = ("constant", "cosine")
# Independent random streams, all derived from `config.seed`.
_INIT_STREAM, _TRAIN_STREAM, _SAMPLE_STREAM, _EVAL_STREAM = range(4)


class NonFiniteError(RuntimeError):
  """Raised when too many consecutive updates had a non-finite loss or gradient."""


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator's position."""
  step: Array
  params: Any
  fixed_variables: Any  # Every collection but "params" (e.g. "constants"): never trained.
  opt_state: Any
  ema_params: Any  # None when parameter averaging is off.
  skipped_updates: Array
  consecutive_skipped: Array

  def variables(self, use_ema: bool = False) -> Dict[str, Any]:
    """The model variables for `apply`, with the averaged parameters when `use_ema`."""
    params = self.ema_params if use_ema and self.ema_params is not None else self.params
    return {"params": params, **self.fixed_variables}


@dataclasses.dataclass(frozen=True)
class TrainResult:
  state: TrainState
  stopped_early: bool  # True when a stop request (SIGTERM) ended the run before num_steps.
  eval_metrics: Dict[str, float]


def num_classes(model: nn.Module) -> int:
  """The number of classes a model is conditioned on (0: unconditional)."""
  return getattr(model, "num_classes", 0)


def model_labels(model: nn.Module, labels: Optional[Array]) -> Optional[Array]:
  """`labels` for a class-conditional model, None for an unconditional one."""
  return labels if num_classes(model) else None


def check_model_matches_data(model: nn.Module, image_shape: Sequence[int],
                             class_names: Sequence[str], dataset: str) -> None:
  """Fails with the config fields to change when `model` cannot train on `dataset`."""
  model_shape = tuple(getattr(model, "image_shape", image_shape))
  if model_shape != tuple(image_shape):
    raise ValueError(f"config.model.image_shape={model_shape}, but {dataset} has images of shape "
                     f"{tuple(image_shape)}")
  if num_classes(model) and num_classes(model) != len(class_names):
    raise ValueError(f"config.model.num_classes={num_classes(model)}, but {dataset} has "
                     f"{len(class_names)} classes")


def learning_rate_schedule(optimizer_config: ml_collections.ConfigDict,
                           num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `learning_rate`, then constant or cosine decay to 0 at `num_steps`."""
  learning_rate = optimizer_config.learning_rate
  warmup_steps = optimizer_config.warmup_steps
  if optimizer_config.schedule not in SCHEDULES:
    raise ValueError(f"optimizer.schedule={optimizer_config.schedule!r}: expected one of "
                     f"{SCHEDULES}")
  if optimizer_config.schedule == "constant":
    after_warmup = optax.constant_schedule(learning_rate)
  else:
    after_warmup = optax.cosine_decay_schedule(learning_rate, max(1, num_steps - warmup_steps))
  if warmup_steps <= 0:
    return after_warmup
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after_warmup], [warmup_steps])


def make_optimizer(optimizer_config: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
  """Adam or Adamax with warm-up, after clipping gradients to `grad_clip_norm` (0: no clipping)."""
  if optimizer_config.name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={optimizer_config.name!r}: expected one of "
                     f"{sorted(OPTIMIZERS)}")
  optimizer = OPTIMIZERS[optimizer_config.name](
      learning_rate_schedule(optimizer_config, num_steps), b1=optimizer_config.b1,
      b2=optimizer_config.b2, eps=optimizer_config.eps)
  if optimizer_config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optimizer_config.grad_clip_norm), optimizer)
  return optimizer


def make_loss_fn(config: ml_collections.ConfigDict) -> LossFn:
  """`loss_fn(model, variables, images, labels, rng) -> (loss, metrics)` for `config`."""
  return functools.partial(objectives.loss_and_metrics, n_bits=config.n_bits,
                           class_loss_weight=config.class_loss_weight)


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, batch: Batch,
                       rng: Array, *, n_bits: int, use_ema: bool) -> TrainState:
  """A fresh state; ActNorm layers initialise from this (dequantised) batch."""
  noise_rng, params_rng = jax.random.split(rng)
  x = objectives.dequantize(noise_rng, batch["image"], n_bits)
  variables = model.init({"params": params_rng}, x, model_labels(model, batch["label"]),
                         method="log_prob")
  variables = dict(variables)
  params = variables.pop("params")
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, fixed_variables=variables,
                    opt_state=optimizer.init(params), ema_params=params if use_ema else None,
                    skipped_updates=zero, consecutive_skipped=zero)


def _select(condition: Array, if_true: Any, if_false: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def ema_decay_at(step: Array, ema_decay: float) -> Array:
  """`ema_decay`, lowered early in training so the average soon forgets the initial parameters."""
  return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               optimizer: optax.GradientTransformation, loss_fn: LossFn, rng: Array,
               ema_decay: float) -> Tuple[TrainState, Dict[str, Array]]:
  """One update on a global batch; skipped (state kept) when the loss or gradient is not finite."""
  step_rng = jax.random.fold_in(rng, state.step)

  def objective(params):
    variables = {"params": params, **state.fixed_variables}
    return loss_fn(model, variables, batch["image"], model_labels(model, batch["label"]),
                   step_rng)

  (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = optax.incremental_update(params, ema_params, 1.0 - ema_decay_at(state.step,
                                                                                  ema_decay))
  params, opt_state, ema_params = _select(finite, (params, opt_state, ema_params),
                                          (state.params, state.opt_state, state.ema_params))
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        ema_params=ema_params, skipped_updates=state.skipped_updates + skipped,
                        consecutive_skipped=(state.consecutive_skipped + 1) * skipped)
  metrics = dict(metrics, grad_norm=grad_norm, skipped=skipped,
                 consecutive_skipped=state.consecutive_skipped)
  return state, metrics


def evaluate(model: nn.Module, variables: Any, batches: Iterable[Mapping[str, np.ndarray]], *,
             loss_fn: LossFn, mesh: jax.sharding.Mesh, rng: Array) -> Dict[str, float]:
  """Metrics of `loss_fn` averaged over every real example of `batches`.

  Each process passes its own numpy batches {"image", "label", "mask"} (mask optional: False marks
  padding), all of one size, as `data.pipeline.eval_batches` gives them. Metrics are computed per
  example so that padding can be left out exactly.
  """

  @jax.jit
  def batch_sums(variables, batch, batch_rng):
    def example_metrics(image, label, example_rng):
      labels = model_labels(model, label[None])
      return loss_fn(model, variables, image[None], labels, example_rng)[1]

    example_rngs = jax.random.split(batch_rng, batch["image"].shape[0])
    metrics = jax.vmap(example_metrics)(batch["image"], batch["label"], example_rngs)
    weights = batch["mask"].astype(jnp.float32)
    sums = {name: jnp.sum(value * weights) for name, value in metrics.items()}
    return sums, jnp.sum(weights)

  sharding = parallel.batch_sharding(mesh)
  totals: Dict[str, float] = {}
  count = 0.0
  for index, batch in enumerate(batches):
    local = {"image": batch["image"], "label": batch["label"],
             "mask": batch.get("mask", np.ones(len(batch["label"]), bool))}
    parallel.check_batch_size(len(local["label"]) * jax.process_count(), mesh)
    sums, weight = jax.device_get(batch_sums(variables, parallel.global_batch_from_local(
        local, sharding), jax.random.fold_in(rng, index)))
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + float(value)
    count += float(weight)
  if count == 0:
    raise ValueError("evaluate: `batches` yielded no examples")
  return {name: total / count for name, total in totals.items()}


def sample_grid(model: nn.Module, variables: Any, rng: Array, *, samples_per_class: int,
                temperature: float, n_bits: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """uint8 samples (rows, samples_per_class, H, W, C): one row per class (one row if unconditional)."""
  rows = max(1, num_classes(model))
  labels = model_labels(model, jnp.repeat(jnp.arange(rows), samples_per_class))

  @functools.partial(jax.jit, out_shardings=parallel.replicated_sharding(mesh))
  def draw(variables, rng):
    x = model.apply(variables, rng, rows * samples_per_class, labels, temperature,
                    method="sample")
    return objectives.postprocess(x, n_bits)

  samples = np.asarray(jax.device_get(draw(variables, rng)))
  return samples.reshape(rows, samples_per_class, *samples.shape[1:])


def _peek(train_iterator) -> Batch:
  """The next batch, leaving the iterator where it was."""
  position = train_iterator.get_state()
  batch = next(train_iterator)
  train_iterator.set_state(position)
  return batch


def _abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                      tree)


def _mean_finite_metrics(history: Sequence[Dict[str, Any]]) -> Dict[str, float]:
  """Means over the steps of a log interval whose update was not skipped."""
  history = jax.device_get(list(history))
  kept = [metrics for metrics in history if not metrics["skipped"]]
  means = {name: float(np.mean([metrics[name] for metrics in kept])) for name in kept[0]} if kept else {}
  means["skipped"] = float(sum(metrics["skipped"] for metrics in history))
  means.pop("consecutive_skipped", None)
  return means


def _check_finite_updates(metrics: Dict[str, Array], step: int, max_consecutive: int) -> None:
  if not int(metrics["skipped"]):
    return
  consecutive = int(metrics["consecutive_skipped"])
  logging.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step,
                  consecutive)
  if consecutive >= max_consecutive:
    raise NonFiniteError(
        f"{consecutive} consecutive updates at steps {step - consecutive + 1}..{step} had a "
        f"non-finite loss or gradient (limit: max_consecutive_nonfinite={max_consecutive}); "
        "stopping. Lower the learning rate or check the data; the last checkpoint is finite.")


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours:d}:{minutes:02d}:{seconds:02d}"


class _Progress:
  """Console lines with throughput and ETA, measured after the first (compiling) step."""

  def __init__(self, start_step: int, num_steps: int, batch_size: int):
    self._num_steps = num_steps
    self._batch_size = batch_size
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def restart_clock(self, step: int) -> None:
    self._last_step, self._last_time = step, time.perf_counter()

  def report(self, step: int, metrics: Dict[str, float]) -> float:
    now = time.perf_counter()
    steps_per_second = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self.restart_clock(step)
    eta = (self._num_steps - step) / steps_per_second if steps_per_second > 0 else math.inf
    values = " ".join(f"{name}={metrics[name]:.4f}" for name in ("loss", "bits_per_dim",
                                                                  "accuracy") if name in metrics)
    logging.info("step %d/%d %s skipped=%d | %.1f img/s | ETA %s", step, self._num_steps, values,
                 metrics["skipped"], steps_per_second * self._batch_size,
                 _format_duration(eta) if math.isfinite(eta) else "?")
    return steps_per_second * self._batch_size


def write_samples(workdir: str, step: int, model: nn.Module, state: TrainState, rng: Array,
                  config: ml_collections.ConfigDict, class_names: Sequence[str],
                  mesh: jax.sharding.Mesh) -> Optional[str]:
  """Draws a per-class sample grid (all processes) and writes it as PNG (the primary process)."""
  grid = sample_grid(model, state.variables(use_ema=True), rng,
                     samples_per_class=config.samples_per_class,
                     temperature=config.sample_temperature, n_bits=config.n_bits, mesh=mesh)
  if not parallel.is_primary():
    return None
  row_labels = list(class_names) if len(class_names) == grid.shape[0] else []
  return images.save_image_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid,
                                row_labels)


def _restore_or_init(manager, init: Callable, train_iterator, rng: Array,
                     sharding: jax.sharding.Sharding) -> TrainState:
  """The latest checkpoint's state (and data position) if there is one, else a fresh state."""
  first_batch = _peek(train_iterator)
  if manager.latest_step() is None:
    return init(first_batch, rng)
  abstract_state = _abstract(jax.eval_shape(init, first_batch, rng), sharding)
  state, data_state = checkpointing.restore(manager, abstract_state)
  train_iterator.set_state(data_state)
  logging.info("resumed from the checkpoint of step %d in %s", int(state.step), manager.directory)
  return state


def train(config: ml_collections.ConfigDict, *, model: nn.Module, train_iterator: Iterator,
          workdir: str, writer: Any, class_names: Sequence[str] = (),
          eval_batches: Optional[Callable[[], Iterable[Mapping[str, np.ndarray]]]] = None,
          mesh: Optional[jax.sharding.Mesh] = None) -> TrainResult:
  """Trains `model` for `config.num_steps`, resuming from the latest checkpoint in `workdir`.

  `train_iterator` yields global batches {"image": uint8, "label": int32} sharded over `mesh`
  (default: all devices) and has `get_state()` / `set_state(state)` with JSON-able states that are
  the same on every process. `writer` takes `write_scalars(step, scalars)` and `flush()` (a CLU
  metric writer). `eval_batches()` gives one pass over held-out numpy batches, evaluated every
  `config.eval_every` steps (0: only at the end) with the averaged parameters when EMA is on.
  Checkpoints go to `workdir/checkpoints`, sample grids to `workdir/samples`, and the final
  evaluation to `workdir/final_metrics.json`.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated_sharding(mesh)
  optimizer = make_optimizer(config.optimizer, config.num_steps)
  schedule = learning_rate_schedule(config.optimizer, config.num_steps)
  loss_fn = make_loss_fn(config)
  seed_key = jax.random.PRNGKey(config.seed)
  init_rng, train_rng, sample_rng, eval_rng = (
      jax.random.fold_in(seed_key, stream)
      for stream in (_INIT_STREAM, _TRAIN_STREAM, _SAMPLE_STREAM, _EVAL_STREAM))
  init = jax.jit(functools.partial(create_train_state, model, optimizer, n_bits=config.n_bits,
                                   use_ema=config.ema_decay > 0), out_shardings=replicated)
  step_fn = jax.jit(
      functools.partial(train_step, model=model, optimizer=optimizer, loss_fn=loss_fn,
                        rng=train_rng, ema_decay=config.ema_decay),
      in_shardings=(replicated, parallel.batch_sharding(mesh)), out_shardings=replicated,
      donate_argnums=0)

  def evaluate_now(state: TrainState, step: int) -> Dict[str, float]:
    metrics = evaluate(model, state.variables(use_ema=True), eval_batches(), loss_fn=loss_fn,
                       mesh=mesh, rng=eval_rng)
    logging.info("step %d evaluation: %s", step,
                 " ".join(f"{name}={value:.4f}" for name, value in sorted(metrics.items())))
    writer.write_scalars(step, {f"eval/{name}": value for name, value in metrics.items()})
    return metrics

  manager = checkpointing.create_manager(os.path.join(workdir, "checkpoints"),
                                         save_interval_steps=config.checkpoint_every,
                                         max_to_keep=config.keep_checkpoints)
  try:
    state = _restore_or_init(manager, init, train_iterator, init_rng, replicated)
    start_step = step = int(state.step)
    progress = _Progress(start_step, config.num_steps, config.batch_size)
    history, pending, train_scalars = [], None, {}
    with checkpointing.StopRequest() as stop_request:
      while step < config.num_steps:
        state, metrics = step_fn(state, next(train_iterator))
        step += 1
        if pending is not None:  # Checked one step late so that the host never waits on a step.
          _check_finite_updates(pending, step - 1, config.max_consecutive_nonfinite)
        pending = metrics
        history.append(metrics)
        if step == start_step + 1:  # Throughput leaves out the first step's compilation.
          jax.block_until_ready(metrics)
          progress.restart_clock(step)
        if step % config.log_every == 0 or step == config.num_steps:
          train_scalars, history = _mean_finite_metrics(history), []
          train_scalars["images_per_second"] = progress.report(step, train_scalars)
          train_scalars["learning_rate"] = float(schedule(step - 1))
          writer.write_scalars(step, {f"train/{name}": value
                                      for name, value in train_scalars.items()})
        if config.sample_every and step % config.sample_every == 0 and step < config.num_steps:
          write_samples(workdir, step, model, state, sample_rng, config, class_names, mesh)
        if (eval_batches and config.eval_every and step % config.eval_every == 0
            and step < config.num_steps):
          evaluate_now(state, step)
        if stop_request.should_stop(manager, step):
          break
        checkpointing.save(manager, step, state, train_iterator.get_state())
      if pending is not None:
        _check_finite_updates(pending, step, config.max_consecutive_nonfinite)
    if manager.latest_step() != step:
      checkpointing.save(manager, step, state, train_iterator.get_state(), force=True)
  finally:
    manager.wait_until_finished()
    manager.close()
  if step < config.num_steps:
    logging.info("stop requested: saved the checkpoint of step %d; rerun to resume", step)
    return TrainResult(state=state, stopped_early=True, eval_metrics={})
  write_samples(workdir, step, model, state, sample_rng, config, class_names, mesh)
  eval_metrics = evaluate_now(state, step) if eval_batches else {}
  writer.flush()
  if parallel.is_primary():
    with open(os.path.join(workdir, "final_metrics.json"), "w") as file:
      json.dump({"step": step, "train": train_scalars, "eval": eval_metrics}, file, indent=2)
  return TrainResult(state=state, stopped_early=False, eval_metrics=eval_metrics)

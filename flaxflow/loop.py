"""The training loop every model family shares; what a family trains is its `Task`.

The loop restores the latest checkpoint of the workdir (train state and data position) or asks the
task for a fresh state, runs the task's jitted step with the state replicated over the device mesh
and the batch split along its "data" axis (`flaxflow.parallel`), and reports progress and runs the
task's periodic work through CLU's periodic actions. It stops when too many updates in a row were
skipped as non-finite (`flaxflow.optimization.apply_if_finite`), saves and returns on SIGTERM
(also at the last step: the final evaluation is then left to the rerun), and at the end saves,
lets the task evaluate, and writes the workdir's final metrics. A SIGTERM during the final
evaluation is the caller's to handle (`flaxflow.checkpointing.preempt_on_sigterm`); the last step's
checkpoint and train metrics are saved by then, so a rerun ends as an uninterrupted run would.

A checkpoint is written only of a healthy state: one from which the next step (the real one, on
the next batch) updates every network. A diverging run's latest checkpoint is then one a rerun
with a lower learning rate can train on, even when the update that wrecked the model was finite
(its parameters thrown far off, every later update non-finite). Health is read from the skips,
not from the loss's size: a GAN's "loss" is the sum of its networks' losses, which rise and fall as
they trade places (a hinge generator loss has no bound), so no threshold on it tells a wrecked
state from a healthy one in every family. A save that falls on an unhealthy state waits for the
next healthy one, so a run with occasional skips keeps saving.
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Protocol, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import periodic_actions

from flaxflow import checkpointing, config_checks, parallel
from flaxflow.workdir import Workdir

Array = jax.Array
Batch = Mapping[str, Array]
Metrics = Dict[str, Array]
# Independent random streams, all derived from the run's seed.
STREAMS = ("init", "train", "sample", "eval")
CONSOLE_METRICS = ("loss", "bits_per_dim", "bits_per_dim_given_label", "accuracy")


def stream_key(seed: int, stream: str) -> Array:
  """The key of one of the run's random `STREAMS`."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), STREAMS.index(stream))


class NonFiniteError(RuntimeError):
  """Raised when training diverged (too many consecutive updates were skipped as non-finite, or
  the last state is not healthy), or when the final metrics are not finite."""


class Task(Protocol):
  """What one model family gives the loop. `init_state` and `train_step` are pure; the loop jits
  them. The state is any pytree with an int `step`; it is checkpointed whole."""

  def init_state(self, batch: Batch, rng: Array) -> Any:
    """A fresh train state; `batch` is the run's first batch (e.g. for data-dependent init)."""

  def train_step(self, state: Any, batch: Batch, rng: Array) -> Tuple[Any, Metrics]:
    """One update on a global batch, `state.step` advanced by one. `rng` is the run's train
    stream: fold in the step for the step's own key. The scalar metrics include "loss" and those
    of `flaxflow.optimization.skip_metrics`."""

  def learning_rates(self, step: int) -> Dict[str, float]:
    """The learning rate of each optimizer at `step`, for the log."""

  def periodic_actions(self, workdir: Workdir,
                       writer: Any) -> List[periodic_actions.PeriodicCallback]:
    """Work during training (e.g. samples, evaluation); the loop calls each action after every
    step before the last with `action(step, state=state)`."""

  def final_evaluation(self, state: Any, workdir: Workdir, writer: Any) -> Dict[str, float]:
    """The work of a finished run (e.g. samples); returns the held-out metrics."""


def sample_and_eval_actions(*, sample_every: int, eval_every: int, write_samples: Any,
                            evaluate: Any) -> List[periodic_actions.PeriodicCallback]:
  """A task's usual periodic work: `write_samples(state, step)` every `sample_every` steps and
  `evaluate(state, step)` every `eval_every` steps; 0 or a None callable leaves one out."""
  actions = []
  for every, work in ((sample_every, write_samples), (eval_every, evaluate)):
    if every and work is not None:
      actions.append(periodic_actions.PeriodicCallback(
          every_steps=every, callback_fn=lambda step, t, state, work=work: work(state, step)))
  return actions


@dataclasses.dataclass(frozen=True)
class TrainResult:
  state: Any
  stopped_early: bool  # True when a stop request (SIGTERM) ended the run before num_steps.
  eval_metrics: Dict[str, float]


class _Throughput(periodic_actions.ReportProgress):
  """CLU's progress report (steps/s, ETA) that also keeps the images per second it measured."""

  def __init__(self, *, batch_size: int, **kwargs):
    super().__init__(**kwargs)
    self._batch_size = batch_size
    self.images_per_second = None

  def _apply(self, step: int, t: float):
    self.images_per_second = self._batch_size * (step - self._previous_step) / (
        t - self._previous_time)
    super()._apply(step, t)


def _peek(train_iterator) -> Batch:
  """The next batch, leaving the iterator where it was."""
  position = train_iterator.get_state()
  batch = next(train_iterator)
  train_iterator.set_state(position)
  return batch


def _mean_finite_metrics(history: Sequence[Metrics]) -> Dict[str, float]:
  """Means over the steps of a log interval in which no update was skipped."""
  history = jax.device_get(list(history))
  kept = [metrics for metrics in history if not metrics["skipped"]]
  means = {name: float(np.mean([metrics[name] for metrics in kept]))
           for name in kept[0] if not name.startswith("skipped")} if kept else {}
  means.update({name: float(sum(metrics[name] for metrics in history))
                for name in history[0] if name.startswith("skipped")})
  means.pop("consecutive_skipped", None)
  return means


def _divergence_message(cause: str, manager) -> str:
  """What stopped the run and how to go on: a lower learning rate, from the last checkpoint,
  which is a healthy one."""
  checkpoint = manager.latest_step()
  rescue = ("no healthy state was saved; rerun with a lower --config.optimizer.learning_rate "
            "(or check the data) to start afresh" if checkpoint is None else
            f"the last checkpoint, of step {checkpoint} in {manager.directory}, is healthy; rerun "
            "with a lower --config.optimizer.learning_rate (or check the data) to resume from it")
  return f"training diverged: {cause}; {rescue}"


def _check_finite_updates(metrics: Metrics, step: int, max_consecutive: int, manager) -> None:
  if not int(metrics["skipped"]):
    return
  consecutive = int(metrics["consecutive_skipped"])
  logging.warning("step %d: non-finite loss, gradient or update, update skipped (%d in a row)",
                  step, consecutive)
  if consecutive >= max_consecutive:
    raise NonFiniteError(_divergence_message(
        f"the updates at steps {step - consecutive + 1}..{step} were skipped for a non-finite "
        f"loss, gradient, parameter or optimizer state (limit: max_consecutive_nonfinite="
        f"{max_consecutive})", manager))


def _next_step_updates_all(step_fn: Callable[..., Any], state: Any, train_iterator) -> bool:
  """Whether the step from `state` on the next batch updates every network (none skipped): the
  health of a state. The step is the run's own (same batch, same random key, so the same outcome
  as the real next step), made on a copy since it takes over (donates) its state."""
  _, metrics = step_fn(jax.tree.map(jnp.copy, state), _peek(train_iterator))
  return not int(metrics["skipped"])


def _save_if_healthy(manager, step: int, state: Any, train_iterator,
                     step_fn: Callable[..., Any]) -> bool:
  """Saves `state` of `step` if it is healthy (`_next_step_updates_all`); returns whether it did."""
  if not _next_step_updates_all(step_fn, state, train_iterator):
    logging.warning("step %d: not saved, since the update from it is skipped (non-finite); the "
                    "last checkpoint is of step %s", step, manager.latest_step())
    return False
  checkpointing.save(manager, step, state, train_iterator.get_state(), force=True)
  return True


def _strict_json_metrics(metrics: Any, prefix: str = "") -> Tuple[Any, List[str]]:
  """`metrics` with every non-finite float replaced by None (strict JSON has no NaN), and the
  "/"-joined names of those replaced or already None."""
  if isinstance(metrics, Mapping):
    converted, bad = {}, []
    for name, value in metrics.items():
      converted[name], bad_inside = _strict_json_metrics(value, f"{prefix}{name}/")
      bad += bad_inside
    return converted, bad
  if metrics is None or (isinstance(metrics, float) and not np.isfinite(metrics)):
    return None, [prefix.rstrip("/")]
  return metrics, []


def _log_train_metrics(*, step: int, t: float, history: List[Metrics], num_steps: int, task: Task,
                       throughput: _Throughput, writer: Any) -> Dict[str, float]:
  """Writes the interval's mean metrics and learning rates, logs a console line; returns them."""
  del t  # The throughput was measured by `throughput` at the same step.
  scalars = _mean_finite_metrics(history)
  history.clear()
  values = " ".join(f"{name}={scalars[name]:.4f}" for name in CONSOLE_METRICS if name in scalars)
  rate = throughput.images_per_second
  logging.info("step %d/%d %s skipped=%d | %s img/s", step, num_steps, values, scalars["skipped"],
               "?" if rate is None else f"{rate:.1f}")
  if rate is not None:
    scalars["images_per_second"] = rate
  scalars.update({name: float(value) for name, value in task.learning_rates(step - 1).items()})
  writer.write_scalars(step, {f"train/{name}": value for name, value in scalars.items()})
  return scalars


def _restore_or_init(manager, init, train_iterator, rng: Array,
                     sharding: jax.sharding.Sharding) -> Any:
  """The latest readable checkpoint's state (and data position) if there is one, else a fresh
  state."""
  first_batch = _peek(train_iterator)
  if manager.latest_step() is None:
    return init(first_batch, rng)
  abstract_state = checkpointing.abstract_state(init, sharding, first_batch, rng)
  state, data_state = checkpointing.restore_latest_readable(manager, abstract_state)
  train_iterator.set_state(data_state)
  logging.info("resumed from the checkpoint of step %d in %s", int(state.step), manager.directory)
  return state


def _check_final_metrics(non_finite: Sequence[str], workdir: Workdir) -> None:
  if non_finite:
    raise NonFiniteError(f"the final metrics {', '.join(non_finite)} are not finite (null in "
                         f"{workdir.final_metrics_file})")


def report_eval_metrics(step: int, metrics: Dict[str, float], writer: Any) -> Dict[str, float]:
  """Logs a task's held-out `metrics` and writes them as "eval/<name>"; returns them."""
  logging.info("step %d evaluation: %s", step,
               " ".join(f"{name}={value:.4f}" for name, value in sorted(metrics.items())))
  writer.write_scalars(step, {f"eval/{name}": value for name, value in metrics.items()})
  return metrics


def check_config(config: Any) -> None:
  """The loop's fields: positive counts and intervals; `keep_checkpoints` None keeps every one."""
  config_checks.positive_int(config, "batch_size", "num_steps", "log_every", "checkpoint_every",
                             "max_consecutive_nonfinite")
  if config.keep_checkpoints is not None:
    config_checks.positive_int(config, "keep_checkpoints")


def jit_train_step(task: Task, mesh: jax.sharding.Mesh, seed: int):
  """The jitted step `train` runs, `step(state, batch) -> (state, metrics)`: the state replicated
  and donated, the batch split over `mesh`, on the run's train stream.

  The step is traced on `mesh`'s abstract mesh, so that what it computes follows the mesh's
  devices, not this host's: `flaxflow.conv`'s choice of convolution and how BPLF spreads its
  per-class work over the chips. `flaxflow.aot` compiles this very step for compile-only devices.
  """
  replicated, rng = parallel.replicated_sharding(mesh), stream_key(seed, "train")

  def step_on_mesh(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return task.train_step(state, batch, rng=rng)

  return jax.jit(step_on_mesh, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                 out_shardings=replicated, donate_argnums=0)


def train(task: Task, config: Any, *, train_iterator: Iterator, workdir: Workdir, writer: Any,
          mesh: jax.sharding.Mesh) -> TrainResult:
  """Trains `task` for `config.num_steps`, resuming from the latest checkpoint in `workdir`, and
  writes `config` to the workdir once the state is restored or initialised.

  `train_iterator` yields global batches sharded over `mesh` and has `get_state()` /
  `set_state(state)` with JSON-able states that are the same on every process. `writer` takes
  `write_scalars(step, scalars)` and `flush()` (a CLU metric writer). `config` gives `seed`,
  `batch_size`, `num_steps`, `log_every`, `checkpoint_every`, `keep_checkpoints` and
  `max_consecutive_nonfinite` (`check_config`).
  """
  check_config(config)
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated_sharding(mesh)
  init = jax.jit(task.init_state, out_shardings=replicated)
  step_fn = jit_train_step(task, mesh, config.seed)
  manager = checkpointing.create_manager(workdir.checkpoints,
                                         save_interval_steps=config.checkpoint_every,
                                         max_to_keep=config.keep_checkpoints)
  try:
    state = _restore_or_init(manager, init, train_iterator, stream_key(config.seed, "init"),
                             replicated)
    if parallel.is_primary():  # Only now: a failed restore leaves the workdir's config as it was.
      workdir.write_config(config)
    start_step = step = int(state.step)
    if start_step >= config.num_steps and os.path.exists(workdir.final_metrics_file):
      logging.info("the run finished at step %d; its final metrics are in %s", start_step,
                   workdir.final_metrics_file)
      final_metrics = workdir.read_final_metrics()
      _check_final_metrics(_strict_json_metrics(final_metrics)[1], workdir)
      return TrainResult(state=state, stopped_early=False, eval_metrics=final_metrics["eval"])
    throughput = _Throughput(batch_size=config.batch_size, num_train_steps=config.num_steps,
                             writer=writer, every_steps=config.log_every, every_secs=None)
    log_metrics = periodic_actions.PeriodicCallback(
        every_steps=config.log_every, on_steps=[config.num_steps],
        callback_fn=functools.partial(_log_train_metrics, num_steps=config.num_steps, task=task,
                                      throughput=throughput, writer=writer))
    task_actions = task.periodic_actions(workdir, writer)
    history, pending, save_due, stopped = [], None, False, False
    # A run resumed after its last step (stopped in its final evaluation) reports the train
    # metrics that step logged.
    train_scalars = workdir.read_train_metrics(start_step) or {}
    with checkpointing.StopRequest() as stop_request:
      while step < config.num_steps:
        state, metrics = step_fn(state, next(train_iterator))
        step += 1
        if pending is not None:  # Checked one step late so that the host never waits on a step.
          _check_finite_updates(pending, step - 1, config.max_consecutive_nonfinite, manager)
        pending = metrics
        history.append(metrics)
        if step == start_step + 1:  # Throughput leaves out the first step's compilation...
          jax.block_until_ready(metrics)
        throughput(step)  # ... since CLU's progress report starts measuring at its first call.
        if log_metrics(step, history=history):
          train_scalars = log_metrics.get_last_callback_result()
        if step < config.num_steps:
          for action in task_actions:
            action(step, state=state)
        if stop_request.should_stop(manager, step):
          stopped = True  # Also at the last step: the final evaluation waits for the rerun.
          break
        if step < config.num_steps and (save_due or manager.should_save(step)):  # The last, below.
          save_due = not _save_if_healthy(manager, step, state, train_iterator, step_fn)
      if pending is not None:
        _check_finite_updates(pending, step, config.max_consecutive_nonfinite, manager)
      if step >= config.num_steps and train_scalars and parallel.is_primary():
        # Before the last checkpoint, so that a rerun resuming from it always finds them.
        workdir.write_train_metrics(step, _strict_json_metrics(train_scalars)[0])
      if (manager.latest_step() != step
          and not _save_if_healthy(manager, step, state, train_iterator, step_fn) and not stopped):
        raise NonFiniteError(_divergence_message(
            f"the update from the state after the last step, {step}, is skipped (non-finite), "
            "so it was not saved", manager))
      stopped = stopped or stop_request.should_stop(manager, step)  # E.g. during that save.
  finally:
    manager.wait_until_finished()
    last_checkpoint = manager.latest_step()
    manager.close()
  if stopped:
    logging.info("stop requested at step %d: the last checkpoint is of step %s; rerun to resume",
                 step, last_checkpoint)
    return TrainResult(state=state, stopped_early=True, eval_metrics={})
  eval_metrics = task.final_evaluation(state, workdir, writer)
  writer.flush()
  final_metrics, non_finite = _strict_json_metrics(
      {"step": step, "train": train_scalars, "eval": eval_metrics})
  if parallel.is_primary():
    workdir.write_final_metrics(final_metrics)
  _check_final_metrics(non_finite, workdir)
  return TrainResult(state=state, stopped_early=False, eval_metrics=eval_metrics)

"""The flows (Glow, BPLF, the conditional-Glow classifier) as a task of the training loop, and a
trained flow loaded back from its workdir.

A fresh state initialises the model on the run's first batch, dequantised (ActNorm's data-dependent
initialisation); the loss is `flaxflow.objectives.loss_and_metrics`; one optimizer updates every
parameter, with an optional average of the parameters (EMA) that samples and evaluation use.
"""

import functools
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import periodic_actions

from flaxflow import (checkpointing, config_checks, images, loop, models, objectives, optimization,
                      parallel, scoring)
from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import evaluation, generation
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir

Array = jax.Array
Batch = loop.Batch
LossFn = evaluation.LossFn
MODEL_NAMES = tuple(models.MODELS)
# Trains without the synthetic faces' build and readers.
TAKES_SYNTHETIC_FACES = False


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator's position."""
  step: Array
  params: Any
  fixed_variables: Any  # Every collection but "params" (e.g. "constants"): never trained.
  opt_state: Any
  ema_params: Any  # None when parameter averaging is off.
  skips: optimization.SkipCount

  def variables(self, use_ema: bool = False) -> Dict[str, Any]:
    """The model variables for `apply`, with the averaged parameters when `use_ema`."""
    params = self.ema_params if use_ema and self.ema_params is not None else self.params
    return {"params": params, **self.fixed_variables}


def make_loss_fn(config: ml_collections.ConfigDict, with_marginal: bool = False) -> LossFn:
  """`loss_fn(model, variables, images, labels, rng) -> (loss, metrics)` for `config`;
  `with_marginal` adds a class-conditional flow's marginal bits/dim (`loss_and_metrics`)."""
  return functools.partial(objectives.loss_and_metrics, n_bits=config.n_bits,
                           class_loss_weight=config.class_loss_weight,
                           zero_deepest_weight=config.get("zero_deepest_weight", 0.0),
                           with_marginal=with_marginal)


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, batch: Batch,
                       rng: Array, *, n_bits: int, use_ema: bool) -> TrainState:
  """A fresh state; ActNorm layers initialise from this (dequantised) batch."""
  noise_rng, params_rng = jax.random.split(rng)
  x = objectives.model_input(model, noise_rng, batch["image"], n_bits)
  variables = model.init({"params": params_rng}, x, model.conditioning_labels(batch["label"]),
                         method="log_prob")
  variables = dict(variables)
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, fixed_variables=variables,
                    opt_state=optimizer.init(params), ema_params=params if use_ema else None,
                    skips=optimization.SkipCount.zero())


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
    return loss_fn(model, variables, batch["image"], model.conditioning_labels(batch["label"]),
                   step_rng)

  (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  params, opt_state, skips, update_metrics = optimization.apply_if_finite(
      optimizer, state.params, state.opt_state, grads, loss, state.skips)
  ema_params = state.ema_params
  if ema_params is not None:
    averaged = optax.incremental_update(params, ema_params,
                                        1.0 - ema_decay_at(state.step, ema_decay))
    ema_params = optimization.select(update_metrics["skipped"] == 0, averaged, ema_params)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        ema_params=ema_params, skips=skips)
  metrics = dict(metrics, grad_norm=update_metrics["grad_norm"],
                 **optimization.skip_metrics({"flow": skips}, {"flow": update_metrics["skipped"]}))
  return state, metrics


def init_variables(config: ml_collections.ConfigDict, rng: Array) -> Dict[str, Any]:
  """The variables of `config.model` (for checks of a config's model)."""
  model = models.create(config.model)
  images = jnp.zeros((1, *model.image_shape), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if model.is_class_conditional else None
  return model.init({"params": rng}, images, labels, method="log_prob")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The flow task's fields (the loop checks its own, `flaxflow.loop.check_config`)."""
  config_checks.positive_int(config, "eval_batch_size", "samples_per_class")
  config_checks.non_negative_int(config, "sample_every", "eval_every",
                                 meaning_of_zero="only at the end")
  config_checks.in_interval(config, "n_bits", 1, 9)
  config_checks.in_interval(config, "ema_decay", 0, 1)
  config_checks.positive_finite(config, "sample_temperature")
  if "zero_deepest_weight" in config:
    config_checks.in_interval(config, "zero_deepest_weight", 0, math.inf)


def check_eval_batch_size(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Held-out batches are split over the devices: found before training, not after it."""
  if config.eval_batch_size * jax.process_count() % mesh.size:
    raise ValueError(f"--config.eval_batch_size={config.eval_batch_size}: expected a multiple of "
                     f"the {mesh.size // jax.process_count()} devices of each process")


def create_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  return models.create(model_config)


def create_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                image_shape: Sequence[int], class_names: Sequence[str],
                eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None,
                train_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None
                ) -> "FlowTask":
  """The task of training `config.model` on images of `image_shape` in `class_names`; a flow
  needs no pass over the training split before training (`train_batches` is not read)."""
  del train_batches
  model = models.create(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  check_eval_batch_size(config, mesh)
  return FlowTask(config, model, mesh, class_names, eval_batches)


class FlowTask:
  """A flow model trained on {"image": uint8, "label": int32} batches by maximum likelihood.

  `eval_batches()` gives one pass over held-out numpy batches, evaluated every `config.eval_every`
  steps (0: only at the end) with the averaged parameters when EMA is on. Sample grids (one row per
  class of `class_names`) are written every `config.sample_every` steps (0: only at the end).
  """

  def __init__(self, config: ml_collections.ConfigDict, model: nn.Module, mesh: jax.sharding.Mesh,
               class_names: Sequence[str] = (),
               eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None):
    check_config(config)
    self.config, self.model, self.mesh = config, model, mesh
    self.class_names, self.eval_batches = list(class_names), eval_batches
    self.optimizer = optimization.make_optimizer(config.optimizer, config.num_steps)
    self.schedule = optimization.learning_rate_schedule(config.optimizer, config.num_steps)
    self.loss_fn = make_loss_fn(config)
    self.eval_loss_fn = make_loss_fn(config, with_marginal=True)

  def init_state(self, batch: Batch, rng: Array) -> TrainState:
    return create_train_state(self.model, self.optimizer, batch, rng, n_bits=self.config.n_bits,
                              use_ema=self.config.ema_decay > 0)

  def train_step(self, state: TrainState, batch: Batch,
                 rng: Array) -> Tuple[TrainState, Dict[str, Array]]:
    return train_step(state, batch, model=self.model, optimizer=self.optimizer,
                      loss_fn=self.loss_fn, rng=rng, ema_decay=self.config.ema_decay)

  def learning_rates(self, step: int) -> Dict[str, float]:
    return {"learning_rate": float(self.schedule(step))}

  def write_samples(self, state: TrainState, step: int, workdir: Workdir) -> None:
    """Draws a per-class sample grid (all processes) and writes it as PNG (the primary process)."""
    grid = generation.sample_grid(self.model, state.variables(use_ema=True),
                                  loop.stream_key(self.config.seed, "sample"),
                                  samples_per_class=self.config.samples_per_class,
                                  temperature=self.config.sample_temperature,
                                  n_bits=self.config.n_bits, mesh=self.mesh)
    if parallel.is_primary():
      row_labels = self.class_names if len(self.class_names) == grid.shape[0] else []
      images.save_image_grid(workdir.sample_grid_file(step), grid, row_labels)

  def evaluate_held_out(self, state: TrainState, step: int, writer: Any) -> Dict[str, float]:
    """Mean loss metrics on `eval_batches`, logged and written as "eval/<name>": "bits_per_dim"
    of p(x) and, for class-conditional models, "bits_per_dim_given_label" and "accuracy"."""
    return evaluation.report_held_out(
        self.model, state.variables(use_ema=True), self.eval_batches(), loss_fn=self.eval_loss_fn,
        mesh=self.mesh, seed=self.config.seed, step=step, writer=writer)

  def periodic_actions(self, workdir: Workdir,
                       writer: Any) -> List[periodic_actions.PeriodicCallback]:
    return loop.sample_and_eval_actions(
        sample_every=self.config.sample_every, eval_every=self.config.eval_every,
        write_samples=lambda state, step: self.write_samples(state, step, workdir),
        evaluate=(lambda state, step: self.evaluate_held_out(state, step, writer))
        if self.eval_batches else None)

  def final_evaluation(self, state: TrainState, workdir: Workdir,
                       writer: Any) -> Dict[str, float]:
    step = int(state.step)
    self.write_samples(state, step, workdir)
    return self.evaluate_held_out(state, step, writer) if self.eval_batches else {}


def transfer_methods(run: TrainedModel, train_batches: Callable[[], Iterable[batches_lib.Batch]],
                     class_names: Sequence[str],
                     shift: generation.LatentShift) -> Dict[str, scoring.Method]:
  """{"class_mean_shift": the flow's transfer} (`generation.transfer_expressions`, class-mean
  latents of each of `class_names` over `train_batches()`), at the run's bit depth, compiled
  once. Inputs are encoded with the model's own prediction of their class, or with the label the
  caller gives if `shift.true_source_labels` or the model is unconditional."""
  model, variables, n_bits = run.model, run.variables, run.config.n_bits
  sums = generation.class_latent_sums(model, variables, train_batches(),
                                      num_classes=len(class_names), n_bits=n_bits)
  move = generation.expression_transfer(model, sums.expression_shifts(), n_bits=n_bits,
                                        zero_deepest=shift.zero_deepest, strength=shift.strength)
  predict = evaluation.label_predictor(model, n_bits=n_bits)

  def transfer(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if model.is_class_conditional and not shift.true_source_labels:
      labels = predict(variables, images)
    return move(variables, images, labels)

  setting = (f"strength {shift.strength:g}" + (", z1 zeroed" if shift.zero_deepest else "")
             + (", true source labels (leak)" if shift.true_source_labels else ""))
  return {"class_mean_shift": scoring.Method(
      transfer, n_bits=n_bits, description=f"z + (z̄_c − z̄_other), {setting}")}


def restore_state(config: ml_collections.ConfigDict, model: nn.Module, checkpoint_dir: str,
                  step: Optional[int] = None, mesh: Optional[jax.sharding.Mesh] = None,
                  task_class: type = None) -> TrainState:
  """The `TrainState` of `step` (default: the latest) in `checkpoint_dir`, replicated on `mesh`;
  `task_class` (default `FlowTask`, or a subclass of it) makes the state's structure."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  return checkpointing.restore_task_state((task_class or FlowTask)(config, model, mesh).init_state,
                                          checkpoint_dir, model.image_shape, mesh, step)


def load_trained(workdir: str, step: Optional[int] = None, use_ema: bool = True,
                 mesh: Optional[jax.sharding.Mesh] = None, *,
                 create_model: Callable[[Any], nn.Module] = models.create,
                 task_class: type = None) -> TrainedModel:
  """The model of the run in `workdir` with the variables of checkpoint `step` (default: latest).

  `use_ema` takes the averaged parameters when the run kept them (the ones its samples and
  evaluations used).
  """
  run = Workdir(workdir)
  config = run.read_config()
  model = create_model(config.model)
  state = restore_state(config, model, run.checkpoints, step, mesh, task_class)
  return TrainedModel(config=config, model=model, variables=state.variables(use_ema=use_ema),
                      step=int(np.asarray(state.step)))

"""IF-GAN (and its baseline, the expression classifier E alone) as a task of the training loop, and
a trained one loaded back from its workdir.

Each step updates D on (x, average face of y) against (x, G(x)), then G and E together on
L = w_gan L_cGAN + w_l1 L_L1 + w_softmax L_softmax + w_island L_IL, E seeing both pairs; the
island loss's class centres are a network of the state with a plain SGD rate of their own. Every
update is skipped, and counted, on its own when not finite (`flaxflow.gan.adversarial`).

The average faces (per class, the pixel mean of the training split's images, the paper's
definition) are computed once when the task is created, from a pass over the training split, and
kept in the state's `extra`, so a checkpoint carries the targets it was trained towards.
"""

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import periodic_actions
from jax.experimental import multihost_utils

from flaxflow import (checkpointing, config_checks, images, loop, models, objectives, optimization,
                      parallel)
from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import evaluation
from flaxflow.gan import adversarial, ifgan
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.tasks import flow
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir

Array = jax.Array
Batch = loop.Batch
BatchesFn = Callable[[], Iterable[batches_lib.Batch]]
MODEL_NAMES = tuple(ifgan.MODELS)
CENTRES = "centres"
LOSS_WEIGHTS = ("gan_weight", "l1_weight", "softmax_weight", "island_weight")


def create_model(model_config: ml_collections.ConfigDict):
  return models.create_from(ifgan.MODELS, model_config)


def init_variables(config: ml_collections.ConfigDict, rng: Array) -> Dict[str, Any]:
  """The variables `class_logits` uses (for checks of a config's model)."""
  model = create_model(config.model)
  images = jnp.zeros((1, *model.image_shape), jnp.float32)
  return model.init({"params": rng}, images, method="class_logits")


def unit_images(images: Array) -> Array:
  """uint8 images as the GAN's floats in [-1, 1) (bin centres, no noise)."""
  return ifgan.to_unit_range(objectives.dequantize(None, images, 8))


def to_uint8(x: Array) -> np.ndarray:
  """The GAN's images in [-1, 1] as uint8."""
  return np.asarray(objectives.postprocess(jnp.asarray(x) / 2.0, 8))


def check_config(config: ml_collections.ConfigDict) -> None:
  """The task's fields (the loop checks its own, `flaxflow.loop.check_config`)."""
  config_checks.positive_int(config, "eval_batch_size", "samples_per_class")
  config_checks.non_negative_int(config, "sample_every", "eval_every",
                                 meaning_of_zero="only at the end")
  for weight in LOSS_WEIGHTS:
    config_checks.in_interval(config, f"loss.{weight}", 0, math.inf)
  config_checks.in_interval(config, "loss.island_alpha", 0, math.inf)
  config_checks.positive_finite(config, "loss.centre_learning_rate")
  if config.loss.adversarial not in adversarial.LOSS_KINDS:
    raise ValueError(f"--config.loss.adversarial={config.loss.adversarial!r}: expected one of "
                     f"{', '.join(adversarial.LOSS_KINDS)}")
  if config.model.get("norm", "instance") not in ifgan.NORMS:
    raise ValueError(f"--config.model.norm={config.model.norm!r}: expected one of "
                     f"{', '.join(ifgan.NORMS)}")
  if config.model.get("classifier_kind", "cnn") not in ifgan.CLASSIFIERS:
    raise ValueError(f"--config.model.classifier_kind={config.model.classifier_kind!r}: expected "
                     f"one of {', '.join(ifgan.CLASSIFIERS)}")
  if config.model.name == "ifgan":
    ifgan.check_attention_sites(config.model.generator_widths, (
        config.model.attention_encoder, config.model.attention_skip,
        config.model.attention_decoder))
  optimization.check_optimizer_config(config.optimizer)


def summarize_training_split(batches: Iterable[batches_lib.Batch], class_names: Sequence[str],
                             per_class: int) -> Tuple[np.ndarray, np.ndarray, int]:
  """One pass over the training split: the average face of each class (the pixel mean of its
  images, in [-1, 1], over every process's shard), the first `per_class` images of each class on
  this process (uint8, for sample grids; fewer are repeated), and the number of examples."""
  sums, counts, kept = None, np.zeros(len(class_names)), [[] for _ in class_names]
  for batch in batches:
    keep = batches_lib.real_rows(batch)
    pictures, labels = np.asarray(batch["image"])[keep], np.asarray(batch["label"])[keep]
    if sums is None:
      sums = np.zeros((len(class_names), *pictures.shape[1:]), np.float64)
    np.add.at(sums, labels, np.asarray(unit_images(pictures), np.float64))
    counts += np.bincount(labels, minlength=len(class_names))
    for picture, label in zip(pictures, labels):
      if len(kept[label]) < per_class:
        kept[label].append(picture)
  if sums is None:
    raise ValueError("the training split has no examples")
  if jax.process_count() > 1:
    sums, counts = (multihost_utils.process_allgather(value).sum(axis=0)
                    for value in (sums, counts))
  missing = [name for name, count in zip(class_names, counts) if count == 0]
  if missing:
    raise ValueError(f"the training split has no images of {', '.join(missing)}: IF-GAN's "
                     "targets are every class's average face")
  averages = (sums / counts.reshape(-1, *[1] * (sums.ndim - 1))).astype(np.float32)
  grid_images = np.stack([np.resize(np.stack(class_images), (per_class, *sums.shape[1:]))
                          if class_images else np.zeros((per_class, *sums.shape[1:]), np.uint8)
                          for class_images in kept]).astype(np.uint8)
  return averages, grid_images, int(counts.sum())


def held_out_metrics(model, variables, images: Array, labels: Array,
                     rng: Optional[Array]) -> Tuple[Array, Dict[str, Array]]:
  """Accuracy and cross-entropy of the prediction, and for IF-GAN the L1 distance of G(x) to
  the average face of x's class, in the form `evaluation.mean_example_metrics` takes."""
  del rng  # The prediction is deterministic.
  logits = model.apply(variables, objectives.dequantize(None, images, 8), method="class_logits")
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  metrics = {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels),
             "cross_entropy": cross_entropy}
  if "generator" in model.networks:
    generated = model.apply(variables, unit_images(images), method="generate")
    targets = variables["constants"]["average_faces"][labels]
    metrics["l1_to_average_face"] = jnp.mean(jnp.abs(generated - targets))
  return cross_entropy, metrics


def generated_faces(model, variables, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """G of uint8 `images` (N, H, W, C), as uint8, `batch_size` at a time."""
  generate = jax.jit(lambda v, x: model.apply(v, unit_images(x), method="generate"))
  return np.concatenate([to_uint8(generate(variables, images[start:start + batch_size]))
                         for start in range(0, len(images), batch_size)])


def translation_grid(model, variables, grid_images: np.ndarray) -> np.ndarray:
  """uint8 (classes, 1 + 2 * per_class, H, W, C): per class its average face, then each input
  next to G(input)."""
  num_classes, per_class = grid_images.shape[:2]
  flat = grid_images.reshape(-1, *grid_images.shape[2:])
  generated = generated_faces(model, variables, flat).reshape(grid_images.shape)
  averages = to_uint8(variables["constants"]["average_faces"])[:, None]
  pairs = np.stack([grid_images, generated], axis=2).reshape(num_classes, 2 * per_class,
                                                               *grid_images.shape[2:])
  return np.concatenate([averages, pairs], axis=1)


def create_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                image_shape: Sequence[int], class_names: Sequence[str],
                eval_batches: Optional[BatchesFn] = None,
                train_batches: Optional[BatchesFn] = None) -> "IFGANTask":
  """The task of training `config.model` on images of `image_shape` in `class_names`;
  `train_batches()` gives one pass over the training split (for the average faces)."""
  check_config(config)
  model = create_model(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  flow.check_eval_batch_size(config, mesh)
  if train_batches is None:
    raise ValueError(f"{config.model.name} needs a pass over the training split (train_batches)")
  averages, grid_images, num_examples = summarize_training_split(
      train_batches(), class_names, config.samples_per_class)
  logging.info("average faces of %d training examples: %s", num_examples, dict(zip(
      class_names, np.round(averages.reshape(len(class_names), -1).mean(axis=1), 3).tolist())))
  return IFGANTask(config, model, mesh, class_names, eval_batches, averages, grid_images,
                   steps_per_epoch=max(1, num_examples // config.batch_size))


class IFGANTask:
  """IF-GAN or the baseline E on {"image": uint8, "label": int32} batches.

  The state is an `adversarial.AdversarialState` over the model's networks and "centres"; its
  `extra` is {"average_faces": (classes, H, W, C) in [-1, 1]} for IF-GAN, None for the baseline.
  Held-out metrics (`held_out_metrics` on `eval_batches`) every `config.eval_every` steps and at
  the end; IF-GAN's sample grids (`translation_grid` of `grid_images`, training images) every
  `config.sample_every` steps and at the end (0: only at the end).
  """

  def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh,
               class_names: Sequence[str], eval_batches: Optional[BatchesFn],
               average_faces: np.ndarray, grid_images: np.ndarray, *, steps_per_epoch: int):
    self.config, self.model, self.mesh = config, model, mesh
    self.class_names, self.eval_batches = list(class_names), eval_batches
    self.average_faces, self.grid_images = average_faces, grid_images
    self.adversarial = "generator" in model.networks
    self.schedule = optimization.learning_rate_schedule(config.optimizer, config.num_steps,
                                                        steps_per_epoch)
    self.optimizers = {name: optimization.make_optimizer(config.optimizer, config.num_steps,
                                                         steps_per_epoch)
                       for name in model.networks}
    self.optimizers[CENTRES] = optax.sgd(config.loss.centre_learning_rate)

  def init_state(self, batch: Batch, rng: Array) -> adversarial.AdversarialState:
    params_rng, centres_rng = jax.random.split(rng)
    variables = self.model.init(params_rng, unit_images(batch["image"]))
    params = {name: variables["params"][name] for name in self.model.networks}
    params[CENTRES] = jax.random.normal(centres_rng, (self.model.num_classes,
                                                      self.model.feature_size))
    extra = ({"average_faces": jnp.asarray(self.average_faces)} if self.adversarial else None)
    return adversarial.init_state(params, self.optimizers, extra=extra)

  def _apply(self, params: Dict[str, Any], *args, method: str):
    networks = {name: params[name] for name in self.model.networks}
    return self.model.apply({"params": networks}, *args, method=method)

  def _classifier_loss(self, params, sources: Sequence[Array], targets: Sequence[Array],
                       labels: Array) -> Tuple[Array, Dict[str, Array]]:
    """w_softmax * (sum over the image sets of E's mean cross-entropy) + w_island * the island
    loss over all of them; `targets` empty for the baseline, which sees the sources alone."""
    inputs = [jnp.concatenate(sources)] + ([jnp.concatenate(targets)] if targets else [])
    logits, features = self._apply(params, *inputs, method="classify")
    all_labels = jnp.tile(labels, len(sources))
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, all_labels)
    softmax = cross_entropy.reshape(len(sources), -1).mean(axis=1).sum()
    island = ifgan.island_loss(features, all_labels, params[CENTRES],
                               self.config.loss.island_alpha)
    loss = self.config.loss.softmax_weight * softmax + self.config.loss.island_weight * island
    accuracy = jnp.mean(jnp.argmax(logits[-len(labels):], axis=-1) == labels)
    return loss, {"loss/softmax": softmax, "loss/island": island, "accuracy": accuracy}

  def discriminator_loss(self, params: Dict[str, Any], x: Array, targets: Array,
                         generated: Array) -> Array:
    """D's loss on the real pairs (x, targets) against the generated pairs (x, generated)."""
    return adversarial.discriminator_loss(
        self._apply(params, x, targets, method="discriminate"),
        self._apply(params, x, generated, method="discriminate"), self.config.loss.adversarial)

  def train_step(self, state: adversarial.AdversarialState, batch: Batch,
                 rng: Array) -> Tuple[adversarial.AdversarialState, Dict[str, Array]]:
    del rng  # Nothing in a step is random: no dropout, no noise.
    x, labels = unit_images(batch["image"]), batch["label"]
    losses = self.config.loss
    if not self.adversarial:
      def classifier_loss(trained):
        loss, metrics = self._classifier_loss({**state.params, **trained}, [x], [], labels)
        return loss, metrics

      state, loss, metrics = adversarial.update_networks(state, ["classifier", CENTRES],
                                                         classifier_loss, self.optimizers)
      return (state.replace(step=state.step + 1),
              adversarial.step_metrics(state, {"loss": loss, **metrics}))

    targets = state.extra["average_faces"][labels]
    generated = jax.lax.stop_gradient(self._apply(state.params, x, method="generate"))

    def discriminator_loss(trained):
      loss = self.discriminator_loss({**state.params, **trained}, x, targets, generated)
      return loss, {"loss/discriminator": loss}

    state, d_loss, d_metrics = adversarial.update_networks(state, ["discriminator"],
                                                           discriminator_loss, self.optimizers)

    def generator_and_classifier_loss(trained):
      params = {**state.params, **trained}
      fake = self._apply(params, x, method="generate")
      adversarial_loss = adversarial.generator_loss(
          self._apply(params, x, fake, method="discriminate"), losses.adversarial)
      l1 = jnp.mean(jnp.abs(fake - targets))
      e_loss, metrics = self._classifier_loss(params, [x, x], [targets, fake], labels)
      loss = losses.gan_weight * adversarial_loss + losses.l1_weight * l1 + e_loss
      return loss, {"loss/generator": adversarial_loss, "loss/l1": l1, **metrics}

    state, ge_loss, ge_metrics = adversarial.update_networks(
        state, ["generator", "classifier", CENTRES], generator_and_classifier_loss,
        self.optimizers)
    return state.replace(step=state.step + 1), adversarial.step_metrics(
        state, {"loss": d_loss + ge_loss, **d_metrics, **ge_metrics})

  def learning_rates(self, step: int) -> Dict[str, float]:
    return {"learning_rate": float(self.schedule(step))}

  def variables(self, state: adversarial.AdversarialState) -> Dict[str, Any]:
    return trained_variables(self.model, state)

  def write_samples(self, state: adversarial.AdversarialState, step: int,
                    workdir: Workdir) -> None:
    if not self.adversarial:
      return
    grid = translation_grid(self.model, self.variables(state), self.grid_images)
    if parallel.is_primary():
      images.save_image_grid(workdir.sample_grid_file(step), grid, self.class_names)

  def evaluate_held_out(self, state: adversarial.AdversarialState, step: int,
                        writer: Any) -> Dict[str, float]:
    return evaluation.report_held_out(
        self.model, self.variables(state), self.eval_batches(), loss_fn=held_out_metrics,
        mesh=self.mesh, seed=self.config.seed, step=step, writer=writer)

  def periodic_actions(self, workdir: Workdir,
                       writer: Any) -> List[periodic_actions.PeriodicCallback]:
    return loop.sample_and_eval_actions(
        sample_every=self.config.sample_every, eval_every=self.config.eval_every,
        write_samples=(lambda state, step: self.write_samples(state, step, workdir))
        if self.adversarial else None,
        evaluate=(lambda state, step: self.evaluate_held_out(state, step, writer))
        if self.eval_batches else None)

  def final_evaluation(self, state: adversarial.AdversarialState, workdir: Workdir,
                       writer: Any) -> Dict[str, float]:
    step = int(state.step)
    self.write_samples(state, step, workdir)
    return self.evaluate_held_out(state, step, writer) if self.eval_batches else {}


def trained_variables(model, state: adversarial.AdversarialState) -> Dict[str, Any]:
  """What `model.apply` takes: the networks' parameters and, for IF-GAN, the average faces as
  "constants"."""
  variables = {"params": {name: state.params[name] for name in model.networks}}
  if state.extra is not None:
    variables["constants"] = dict(state.extra)
  return variables


def restore_state(config: ml_collections.ConfigDict, checkpoint_dir: str,
                  step: Optional[int] = None,
                  mesh: Optional[jax.sharding.Mesh] = None) -> adversarial.AdversarialState:
  """The state of checkpoint `step` (default: the latest) in `checkpoint_dir`, replicated on
  `mesh`."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  model = create_model(config.model)
  shape = tuple(config.model.image_shape)
  # The checkpoint holds the average faces; zeros only give the abstract state its shapes.
  task = IFGANTask(config, model, mesh, (), None,
                   np.zeros((model.num_classes, *shape), np.float32),
                   np.zeros((model.num_classes, 1, *shape), np.uint8), steps_per_epoch=1)
  return checkpointing.restore_task_state(task.init_state, checkpoint_dir, shape, mesh, step)


def load_trained(workdir: str, step: Optional[int] = None, use_ema: bool = True,
                 mesh: Optional[jax.sharding.Mesh] = None) -> TrainedModel:
  """The model of the run in `workdir` with the variables of checkpoint `step` (default: latest);
  `use_ema` is accepted for the family interface (IF-GAN keeps no average of parameters)."""
  del use_ema
  run = Workdir(workdir)
  config = run.read_config()
  state = restore_state(config, run.checkpoints, step, mesh)
  model = create_model(config.model)
  return TrainedModel(config=config, model=model, variables=trained_variables(model, state),
                      step=int(np.asarray(state.step)))

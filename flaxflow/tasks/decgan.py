"""DECGAN as a task of the training loop, and a trained DECGAN loaded back from its workdir.

Each step (`flaxflow.gan.decgan.train_step`) updates D, then E1, E2 and G together, every network
with its own Adam (2e-4, betas 0.5 and 0.999 in the configs) and its own non-finite guard
(`flaxflow.gan.adversarial`). The per-class history buffer of generated images lives in the
state's `extra`, so a checkpoint holds it and resume is exact.

Training pairs. A batch holds images and expression labels only (no subject), so each source
image is paired with a partner drawn at random from the same batch among those of another
expression, which is its target-expression image. This is the paper's unpaired setting (source
and target need not show the same person), every step asks for a change of expression (a
same-expression partner would let G learn the identity map), and over the steps every
source -> target pair of expressions is drawn. The draw comes from the step's key, so resume
and data-parallel runs see the same pairs.

Periodic samples: the first held-out image of each class (rows) moved to every expression
(columns, one-hot conditions). The final evaluation gives E2's accuracy and the cycle L1 on the
held-out split.
"""

import functools
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import periodic_actions

from flaxflow import checkpointing, config_checks, images, loop, optimization, parallel, scoring
from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import evaluation, generation
from flaxflow.gan import adversarial, decgan
from flaxflow.tasks import flow
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir

Array = jax.Array
MODEL_NAMES = ("decgan",)


create_model = decgan.create


def init_variables(config: ml_collections.ConfigDict, rng: Array) -> Dict[str, Any]:
  """The variables of `config.model` (for checks of a config's model)."""
  model = create_model(config.model)
  images = jnp.zeros((1, *config.model.image_shape), jnp.float32)
  return model.init({"params": rng}, images, images)


def check_config(config: ml_collections.ConfigDict) -> None:
  """The DECGAN task's fields (the loop checks its own, `flaxflow.loop.check_config`)."""
  config_checks.positive_int(config, "eval_batch_size", "model.num_classes",
                             "model.encoder_embedding_features")
  config_checks.non_negative_int(config, "sample_every", meaning_of_zero="only at the end")
  config_checks.non_negative_int(config, "decgan.history_size", meaning_of_zero="no buffer")
  for weight in ("cycle_weight", "classification_weight", "association_weight",
                 "target_class_weight", "reconstruction_weight"):
    config_checks.in_interval(config, f"decgan.{weight}", 0, float("inf"))
  if config.decgan.adversarial_loss not in adversarial.LOSS_KINDS:
    raise ValueError(f"--config.decgan.adversarial_loss={config.decgan.adversarial_loss!r}: "
                     f"expected one of {', '.join(adversarial.LOSS_KINDS)}")
  model = config.model
  downsamplings = len(model.encoder_widths) - 1
  if len(model.encoder_kernels) != len(model.encoder_widths):
    raise ValueError(f"--config.model.encoder_kernels={tuple(model.encoder_kernels)}: expected "
                     f"one per encoder width ({len(model.encoder_widths)})")
  if len(model.generator_kernels) != len(model.generator_widths):
    raise ValueError(f"--config.model.generator_kernels={tuple(model.generator_kernels)}: "
                     f"expected one per generator width ({len(model.generator_widths)})")
  if len(model.generator_widths) - 1 != downsamplings:
    raise ValueError(f"--config.model.generator_widths={tuple(model.generator_widths)}: expected "
                     f"{downsamplings + 1} widths, one upsampling per strided encoder layer")
  if len(model.discriminator_widths) != 4:
    raise ValueError(f"--config.model.discriminator_widths={tuple(model.discriminator_widths)}: "
                     "expected 4 widths (Table 2)")
  side = model.image_shape[0]
  if any(size % 2 ** downsamplings for size in model.image_shape[:2]):
    raise ValueError(f"--config.model.image_shape={tuple(model.image_shape)}: expected sides "
                     f"divisible by {2 ** downsamplings} for {downsamplings} strided encoder "
                     f"layers (got {side})")


def loss_weights(config: ml_collections.ConfigDict) -> decgan.LossWeights:
  return decgan.LossWeights(cycle=config.decgan.cycle_weight,
                            classification=config.decgan.classification_weight,
                            association=config.decgan.association_weight,
                            target_class=config.decgan.target_class_weight,
                            reconstruction=config.decgan.reconstruction_weight)


def create_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                image_shape: Sequence[int], class_names: Sequence[str],
                eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None,
                train_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None
                ) -> "DecganTask":
  """The task of training `config.model` on images of `image_shape` in `class_names`."""
  del train_batches  # Nothing to learn before training.
  check_config(config)
  model = create_model(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  flow.check_eval_batch_size(config, mesh)
  return DecganTask(config, model, mesh, class_names, eval_batches)


def _held_out_scores(model: decgan.DECGAN, variables: Any, image_batch: Array,
                     labels: Array) -> Dict[str, Array]:
  """Per example: whether E2 reads its class, and the L1 (in [0, 1]) of its cycle through the
  next class."""
  x = decgan.to_unit_range(image_batch)
  probabilities = model.apply(variables, x, method="expression")[0]
  moved = model.apply(variables, x, jax.nn.one_hot((labels + 1) % model.num_classes,
                                                   model.num_classes),
                      method="transfer_to_condition")
  back = model.apply(variables, moved, x, method="cycle")
  return {"accuracy": (jnp.argmax(probabilities, axis=-1) == labels).astype(jnp.float32),
          "cycle_l1": jnp.abs(back - x).mean(axis=(1, 2, 3)) / 2}


class DecganTask:
  """DECGAN trained on {"image": uint8, "label": int32} batches (`flaxflow.gan.decgan`)."""

  def __init__(self, config: ml_collections.ConfigDict, model: decgan.DECGAN,
               mesh: jax.sharding.Mesh, class_names: Sequence[str] = (),
               eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None):
    self.config, self.model, self.mesh = config, model, mesh
    self.class_names, self.eval_batches = list(class_names), eval_batches
    optimizer = optimization.make_optimizer(config.optimizer, config.num_steps)
    self.optimizers = {name: optimizer for name in model.networks}
    self.schedule = optimization.learning_rate_schedule(config.optimizer, config.num_steps)
    self.weights = loss_weights(config)

  def init_state(self, batch: loop.Batch, rng: Array) -> adversarial.AdversarialState:
    return decgan.init_state(self.model, self.optimizers, batch["image"], rng,
                             self.config.decgan.history_size)

  def train_step(self, state: adversarial.AdversarialState, batch: loop.Batch,
                 rng: Array) -> Tuple[adversarial.AdversarialState, Dict[str, Array]]:
    return decgan.train_step(state, batch, rng, model=self.model, optimizers=self.optimizers,
                             weights=self.weights,
                             adversarial_loss=self.config.decgan.adversarial_loss)

  def learning_rates(self, step: int) -> Dict[str, float]:
    return {"learning_rate": float(self.schedule(step))}

  def _sample_inputs(self) -> Optional[np.ndarray]:
    """The first held-out image of each class present in the first held-out batch."""
    if not self.eval_batches:
      return None
    batch = next(iter(self.eval_batches()))
    labels = np.asarray(batch["label"])[batches_lib.real_rows(batch)]
    firsts = [np.flatnonzero(labels == label)[0] for label in np.unique(labels)]
    return np.asarray(batch["image"])[firsts]

  def write_samples(self, state: adversarial.AdversarialState, step: int,
                    workdir: Workdir) -> None:
    """Rows: held-out inputs; columns: the input, then the input moved to every expression."""
    inputs = self._sample_inputs()
    if inputs is None:
      return
    moved = class_transfers(self.model, {"params": state.params}, inputs)
    if parallel.is_primary():
      images.save_image_grid(workdir.sample_grid_file(step),
                             np.concatenate([inputs[:, None], moved], axis=1))

  def evaluate_held_out(self, state: adversarial.AdversarialState, step: int,
                        writer: Any) -> Dict[str, float]:
    """E2's accuracy and the cycle L1 on `eval_batches`, logged and written as "eval/<name>"."""
    return evaluation.report_held_out(
        self.model, {"params": state.params}, self.eval_batches(),
        loss_fn=lambda model, variables, image, label, rng: (None, jax.tree.map(
            jnp.mean, _held_out_scores(model, variables, image, label))),
        mesh=self.mesh, seed=self.config.seed, step=step, writer=writer)

  def periodic_actions(self, workdir: Workdir,
                       writer: Any) -> List[periodic_actions.PeriodicCallback]:
    if not self.config.sample_every:
      return []
    return [periodic_actions.PeriodicCallback(
        every_steps=self.config.sample_every,
        callback_fn=lambda step, t, state: self.write_samples(state, step, workdir))]

  def final_evaluation(self, state: adversarial.AdversarialState, workdir: Workdir,
                       writer: Any) -> Dict[str, float]:
    step = int(state.step)
    self.write_samples(state, step, workdir)
    return self.evaluate_held_out(state, step, writer) if self.eval_batches else {}


def _to_every_class(model: decgan.DECGAN, images_of_classes: Callable[[Any, Array, Array], Array]
                    ) -> Callable[[Any, np.ndarray], np.ndarray]:
  """(variables, inputs) -> uint8 (B, classes, H, W, C): `images_of_classes(variables, x,
  classes)` of every input with every class, in one batch, compiled once for all calls."""
  images_of_classes = jax.jit(images_of_classes)

  def every_class(variables: Any, inputs: np.ndarray) -> np.ndarray:
    batch, num_classes = len(inputs), model.num_classes
    repeated = jnp.repeat(jnp.asarray(inputs), num_classes, axis=0)
    classes = jnp.tile(jnp.arange(num_classes), batch)
    images = images_of_classes(variables, repeated, classes)
    return np.asarray(images).reshape(batch, num_classes, *inputs.shape[1:])

  return every_class


def class_transfer(model: decgan.DECGAN, class_conditions: Optional[np.ndarray] = None
                   ) -> Callable[[Any, np.ndarray], np.ndarray]:
  """(variables, inputs) -> uint8 (B, classes, H, W, C): every input moved to every class
  (`decgan.transfer_to_class`), compiled once for all calls."""
  return _to_every_class(model, lambda variables, x, classes: decgan.transfer_to_class(
      model, variables, x, classes, class_conditions))


def class_transfers(model: decgan.DECGAN, variables: Any, inputs: np.ndarray,
                    class_conditions: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 (B, classes, H, W, C): every input moved to every class
  (`decgan.transfer_to_class`)."""
  return class_transfer(model, class_conditions)(variables, inputs)


def class_cycles(model: decgan.DECGAN, variables: Any, inputs: np.ndarray,
                 class_conditions: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 (B, classes, H, W, C): every input moved to every class and back by the cycle
  (`decgan.cycle_reconstruction`)."""
  return _to_every_class(
      model, lambda variables, x, classes: decgan.cycle_reconstruction(
          model, variables, x,
          decgan.class_conditions_of(classes, model.num_classes, class_conditions)))(
              variables, inputs)


def expression_classes(model: decgan.DECGAN, variables: Any, inputs: np.ndarray) -> np.ndarray:
  """E2's most probable class of each uint8 image."""
  probabilities = jax.jit(functools.partial(decgan.expression_probabilities, model))(
      variables, jnp.asarray(inputs))
  return np.asarray(jnp.argmax(probabilities, axis=-1))


def class_mean_conditions(model: decgan.DECGAN, variables: Any,
                          batches: Iterable[batches_lib.Batch],
                          mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
  """(classes, classes): E2's mean p(l) over the images of each class in `batches`, the
  condition `decgan.transfer_to_class` takes for a class; a class without images gets its
  one-hot."""
  probabilities = jax.jit(functools.partial(decgan.expression_probabilities, model))
  sums = np.zeros((model.num_classes, model.num_classes))
  counts = np.zeros(model.num_classes)
  for outputs, batch in batches_lib.map_batches(
      lambda images_, labels, index: {"p": probabilities(variables, images_)}, batches, mesh):
    np.add.at(sums, batch["label"], outputs["p"])
    np.add.at(counts, batch["label"], 1)
  means = np.eye(model.num_classes)
  seen = counts > 0
  means[seen] = sums[seen] / counts[seen, None]
  return means.astype(np.float32)


def transfer_methods(run: TrainedModel, train_batches: Callable[[], Iterable[batches_lib.Batch]],
                     class_names: Sequence[str],
                     shift: generation.LatentShift) -> Dict[str, scoring.Method]:
  """{"one_hot": G1(E1(x), one-hot of c), "class_mean": G1(E1(x), E2's mean p(l) over the
  images of c in `train_batches()`)} for each of `class_names`, each with E2 as its own
  classifier. `shift` must be the default: it moves a flow's latents, which DECGAN has none of."""
  if shift != generation.LatentShift():
    raise ValueError(f"{shift}: --strength, --zero_deepest and --true_source_labels move a "
                     "flow's latents; a DECGAN run has none")
  model, variables = run.model, run.variables
  if len(class_names) != model.num_classes:
    raise ValueError(f"{len(class_names)} classes in the data, {model.num_classes} in the model")
  own_reader = functools.partial(expression_classes, model, variables)
  conditions = {"one_hot": None,
                "class_mean": class_mean_conditions(model, variables, train_batches())}
  return {name: scoring.Method(
      lambda images, labels, transfer=class_transfer(model, condition): transfer(variables,
                                                                                 images),
      own_reader=own_reader, description=f"G1(E1(x), l_c), l_c = {name.replace('_', ' ')} of c")
      for name, condition in conditions.items()}


def restore_state(config: ml_collections.ConfigDict, checkpoint_dir: str,
                  step: Optional[int] = None,
                  mesh: Optional[jax.sharding.Mesh] = None) -> adversarial.AdversarialState:
  """The train state of `step` (default: the latest) in `checkpoint_dir`, replicated on `mesh`."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  model = create_model(config.model)
  return checkpointing.restore_task_state(DecganTask(config, model, mesh).init_state,
                                          checkpoint_dir, model.image_shape, mesh, step)


def load_trained(workdir: str, step: Optional[int] = None, use_ema: bool = True,
                 mesh: Optional[jax.sharding.Mesh] = None) -> TrainedModel:
  """The DECGAN of the run in `workdir` with the parameters of checkpoint `step` (default:
  latest); `use_ema` is ignored (DECGAN keeps no average)."""
  del use_ema
  run = Workdir(workdir)
  config = run.read_config()
  state = restore_state(config, run.checkpoints, step, mesh)
  return TrainedModel(config=config, model=create_model(config.model),
                      variables={"params": state.params}, step=int(np.asarray(state.step)))

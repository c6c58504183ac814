"""DECGAN as a task of the training loop, and a trained DECGAN loaded back from its workdir.

Each step (`flaxflow.gan.decgan.train_step`) updates D, then E1, E2 and G together, every network
with its own Adam (2e-4, betas 0.5 and 0.999 in the configs) and its own non-finite guard
(`flaxflow.gan.adversarial`). The per-class history buffer of generated images lives in the
state's `extra`, so a checkpoint holds it and resume is exact.

Training pairs. A batch holds images and expression labels only (no subject), so each source
image is paired with a partner drawn at random among the next rows of the batch (up to 15, every
other row of a batch of 16) that show another expression, which is its target-expression image
(`flaxflow.gan.decgan.partner_offsets`). This is the paper's unpaired setting (source
and target need not show the same person), every step asks for a change of expression (a
same-expression partner would let G learn the identity map), and over the steps every
source -> target pair of expressions is drawn. The draw comes from the step's key, so resume
and data-parallel runs see the same pairs.

Periodic samples: the first held-out image of each class (rows) moved to every expression
(columns, one-hot conditions). The held-out evaluation gives E2's accuracy and the cycle L1 on
the held-out split. On synthetic faces, given `synthetic_faces` (the run's build and its
independent readers, `flaxflow.scoring`), the transfer to one-hot targets is also scored every
`eval_every` steps and at the end, by the scoring protocol on a small fixed set (the peak frames
of the first `decgan.eval_people` test people), logged as one line and written as
"eval/transfer/<figure>".
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions

from flaxflow import checkpointing, config_checks, images, loop, optimization, parallel, scoring
from flaxflow.data.synthetic_faces import factors
from flaxflow.data.synthetic_faces.renderer import render
from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import decgan_inference, evaluation, generation, probes
from flaxflow.gan import adversarial, decgan, pixels
from flaxflow.tasks import flow
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir

Array = jax.Array
MODEL_NAMES = ("decgan",)
# Scores itself against ground truth while it trains: create_task takes synthetic_faces.
TAKES_SYNTHETIC_FACES = True
# What `create_task` takes as `synthetic_faces`: a callable giving the run's synthetic-faces
# build and its independent readers, called when the transfer is first scored.
SyntheticFaces = Callable[[], Tuple[scoring.FaceBuild, scoring.Readers]]
# The seed stream of the oracle's rendered pairs (the dataset and `flaxflow.scoring` draw from
# `factors`' streams 0 to 4).
ORACLE_STREAM = 5
# Images of each class of each test person that the probes of z read (560 for 20 people).
PROBE_PER_CLASS = 4
# The figures of `flaxflow.scoring.score` written during training.
TRANSFER_FIGURES = ("target_accuracy", "ceiling_target_accuracy",
                    "own_classifier_target_accuracy", "identity_kept", "ceiling_identity_kept",
                    "gap_closed", "l1_changed_pixels", "l1_unchanged_pixels",
                    "untouched_l1_unchanged_pixels", "checkerboard_ratio", "z_probe_expression",
                    "z_probe_person")


create_model = decgan.create


def init_variables(config: ml_collections.ConfigDict, rng: Array) -> Dict[str, Any]:
  """The variables of `config.model` (for checks of a config's model)."""
  model = create_model(config.model)
  images = jnp.zeros((1, *config.model.image_shape), jnp.float32)
  return model.init({"params": rng}, images, images)


def _check_choice(config: ml_collections.ConfigDict, field: str, choices: Sequence[str]) -> None:
  value = config_checks.field_value(config, field)
  if value not in choices:
    raise ValueError(f"--config.{field}={value!r}: expected one of {', '.join(choices)}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The DECGAN task's fields (the loop checks its own, `flaxflow.loop.check_config`)."""
  config_checks.positive_int(config, "eval_batch_size", "model.num_classes",
                             "model.encoder_embedding_features")
  config_checks.non_negative_int(config, "sample_every", "eval_every",
                                 meaning_of_zero="only at the end")
  config_checks.non_negative_int(config, "decgan.eval_people", meaning_of_zero="every one")
  config_checks.non_negative_int(config, "decgan.history_size", meaning_of_zero="no buffer")
  config_checks.non_negative_int(config, "model.expression_adversary_width",
                                 meaning_of_zero="no expression adversary")
  for weight in WEIGHT_FIELDS:
    config_checks.in_interval(config, f"decgan.{weight}", 0, float("inf"))
  fraction = config.decgan.one_hot_fraction
  if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
          and 0 <= fraction <= 1):
    raise ValueError(f"--config.decgan.one_hot_fraction={fraction!r}: expected a number in "
                     "[0, 1]")
  _check_choice(config, "decgan.adversarial_loss", adversarial.LOSS_KINDS)
  for field, choices in (("identity_code", decgan.IDENTITY_CODES),
                         ("upsampling", decgan.UPSAMPLINGS), ("output", decgan.OUTPUTS),
                         ("discriminator_condition", decgan.DISCRIMINATOR_CONDITIONS)):
    _check_choice(config, f"model.{field}", choices)
  if config.decgan.expression_adversary_weight and not config.model.expression_adversary_width:
    raise ValueError(f"--config.decgan.expression_adversary_weight="
                     f"{config.decgan.expression_adversary_weight!r}: expected 0 without an "
                     "adversary (--config.model.expression_adversary_width=0)")
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


# The config's decgan.<name>_weight field of each `decgan.LossWeights` term.
WEIGHT_FIELDS = tuple(f"{name}_weight" for name in (
    "cycle", "classification", "association", "target_class", "reconstruction",
    "expression_adversary", "discriminator_class", "change", "paired"))


def loss_weights(config: ml_collections.ConfigDict) -> decgan.LossWeights:
  """The config's weights; a run from before a term existed gets the term's default (off)."""
  defaults = decgan.LossWeights()
  return decgan.LossWeights(**{
      field[:-len("_weight")]: config.decgan.get(field, getattr(defaults, field[:-len("_weight")]))
      for field in WEIGHT_FIELDS})


def create_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                image_shape: Sequence[int], class_names: Sequence[str],
                eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None,
                train_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None,
                synthetic_faces: Optional[SyntheticFaces] = None) -> "DecganTask":
  """The task of training `config.model` on images of `image_shape` in `class_names`; with
  `synthetic_faces`, the transfer is scored against ground truth while it trains."""
  del train_batches  # Nothing to learn before training.
  check_config(config)
  model = create_model(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  flow.check_eval_batch_size(config, mesh)
  if config.decgan.paired_weight and synthetic_faces is None:
    raise ValueError(f"--config.decgan.paired_weight={config.decgan.paired_weight!r}: the oracle "
                     "renders its ground truth, which only synthetic faces have; expected 0 for "
                     f"{config.dataset}")
  return DecganTask(config, model, mesh, class_names, eval_batches, synthetic_faces)


def oracle_pairs(build: scoring.FaceBuild, batch_size: int
                 ) -> Callable[[int], Dict[str, np.ndarray]]:
  """The paired batches of the oracle term (`decgan.train_step`'s `paired_batch`), a function of
  the step: `batch_size` fresh renders of the build's training people ("image", peak-frame
  intensities, new poses, light and noise), each with its "label", a "target_label" of another
  class, and its "truth": the same face rendered with the target at the scoring's stated
  intensity. What only a renderer gives: unpaired training never sees it."""
  identities = build.identities("train")
  num_classes = len(factors.CLASS_NAMES)
  low, high = scoring.PEAK_INTENSITIES

  def draw(step: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng([build.seed, ORACLE_STREAM, int(step)])
    person = rng.integers(len(identities), size=batch_size)
    labels = rng.integers(num_classes, size=batch_size).astype(np.int32)
    targets = ((labels + rng.integers(1, num_classes, size=batch_size)) % num_classes).astype(
        np.int32)
    intensity = np.where(labels == factors.NEUTRAL, 0,
                         high - rng.random(batch_size) * (high - low)).astype(np.float32)
    nuisance = factors.draw_nuisances(rng, batch_size)
    stated = np.where(targets == factors.NEUTRAL, 0, scoring.STATED_INTENSITY).astype(np.float32)
    return {"image": render(identities[person], labels, intensity, nuisance, build.image_size),
            "label": labels, "target_label": targets,
            "truth": render(identities[person], targets, stated, nuisance, build.image_size)}

  return draw


def first_people(scoring_set: scoring.ScoringSet, count: int) -> scoring.ScoringSet:
  """`scoring_set` with the sources of its first `count` people only (every one for 0); the
  identity measure still chooses among all the people's reference images."""
  if not count:
    return scoring_set
  kept = scoring_set.sources.person < count
  sources = scoring_set.sources
  return dataclasses.replace(
      scoring_set, sources=scoring.Drawn(factors=sources.factors[kept],
                                         person=sources.person[kept],
                                         images=sources.images[kept]),
      truths=scoring_set.truths[kept], noise_free_truths=scoring_set.noise_free_truths[kept])


def code_probes(model: decgan.DECGAN, variables: Any, drawn: scoring.Drawn) -> Dict[str, float]:
  """How much of the expression and of the person E1's z holds: the held-out accuracies of
  linear probes of each (`flaxflow.analysis.probes`) on the z of `drawn`'s images, each person's
  images split in two. Expression removed from z puts the first near chance (1/7)."""
  codes = decgan_inference.identity_codes(model, variables, drawn.images)
  held_out = probes.held_out_within_groups(drawn.person)
  return {"expression": probes.probe_accuracy(codes, drawn.factors.expression, held_out),
          "person": probes.probe_accuracy(codes, drawn.person, held_out)}


def transfer_line(step: int, figures: Dict[str, Any]) -> str:
  """One log line of `flaxflow.scoring.score`'s figures of the one-hot transfer."""
  percent = lambda name: f"{100 * figures[name]:.1f}%"
  return (f"step {step} transfer to one-hot targets ({figures['num_transfers']} of "
          f"{figures['people']} test people, peak frames): target {percent('target_accuracy')} "
          f"(ceiling {percent('ceiling_target_accuracy')}, E2 "
          f"{percent('own_classifier_target_accuracy')}), identity kept "
          f"{percent('identity_kept')} (ceiling {percent('ceiling_identity_kept')}), gap closed "
          f"{figures['gap_closed']:.3f}, L1 changed/unchanged pixels "
          f"{figures['l1_changed_pixels']:.4f}/{figures['l1_unchanged_pixels']:.4f} (untouched "
          f"{figures['untouched_l1_changed_pixels']:.4f}/"
          f"{figures['untouched_l1_unchanged_pixels']:.4f}), checkerboard "
          f"{figures['checkerboard_ratio']:.2f}; probes of z: expression "
          f"{percent('z_probe_expression')}, person {percent('z_probe_person')}")


def _held_out_scores(model: decgan.DECGAN, variables: Any, image_batch: Array,
                     labels: Array) -> Dict[str, Array]:
  """Per example: whether E2 reads its class, and the L1 (in [0, 1]) of its cycle through the
  next class."""
  x = pixels.from_uint8(image_batch)
  probabilities = model.apply(variables, x, method="expression")[0]
  target = jax.nn.one_hot((labels + 1) % model.num_classes, model.num_classes)
  moved = model.apply(variables, x, probabilities, target, method="transfer_between")
  back = model.apply(variables, moved, probabilities, target, method="cycle_to_condition")
  return {"accuracy": (jnp.argmax(probabilities, axis=-1) == labels).astype(jnp.float32),
          "cycle_l1": jnp.abs(back - x).mean(axis=(1, 2, 3)) / 2}


class DecganTask:
  """DECGAN trained on {"image": uint8, "label": int32} batches (`flaxflow.gan.decgan`)."""

  def __init__(self, config: ml_collections.ConfigDict, model: decgan.DECGAN,
               mesh: jax.sharding.Mesh, class_names: Sequence[str] = (),
               eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None,
               synthetic_faces: Optional[SyntheticFaces] = None):
    self.config, self.model, self.mesh = config, model, mesh
    self.class_names, self.eval_batches = list(class_names), eval_batches
    self.synthetic_faces = synthetic_faces
    self._scoring_set = None  # (the fixed set, its readers), made on first use.
    optimizer = optimization.make_optimizer(config.optimizer, config.num_steps)
    self.optimizers = {name: optimizer for name in model.networks}
    self.schedule = optimization.learning_rate_schedule(config.optimizer, config.num_steps)
    self.weights = loss_weights(config)
    self.paired_batch = None  # The oracle's pairs, rendered on the host (`oracle_pairs`).
    if self.weights.paired and synthetic_faces is not None:
      draw = oracle_pairs(synthetic_faces()[0], config.batch_size)
      image = jax.ShapeDtypeStruct((config.batch_size, *model.image_shape), jnp.uint8)
      label = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
      shapes = {"image": image, "label": label, "target_label": label, "truth": image}
      self.paired_batch = lambda step: jax.pure_callback(draw, shapes, step)

  def init_state(self, batch: loop.Batch, rng: Array) -> adversarial.AdversarialState:
    return decgan.init_state(self.model, self.optimizers, batch["image"], rng,
                             self.config.decgan.history_size)

  def train_step(self, state: adversarial.AdversarialState, batch: loop.Batch,
                 rng: Array) -> Tuple[adversarial.AdversarialState, Dict[str, Array]]:
    return decgan.train_step(state, batch, rng, model=self.model, optimizers=self.optimizers,
                             weights=self.weights,
                             adversarial_loss=self.config.decgan.adversarial_loss,
                             one_hot_fraction=self.config.decgan.get("one_hot_fraction", 0.0),
                             paired_batch=self.paired_batch)

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
    moved = decgan_inference.class_transfers(self.model, {"params": state.params}, inputs)
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

  def score_transfer(self, state: adversarial.AdversarialState, step: int,
                     writer: Any) -> Dict[str, float]:
    """The one-hot transfer of the fixed set scored by `flaxflow.scoring.score`, logged as one
    line and written as "eval/transfer/<figure>" (TRANSFER_FIGURES, with `code_probes` of the
    test people's z); {} without `synthetic_faces`."""
    if self.synthetic_faces is None:
      return {}
    if self._scoring_set is None:
      build, readers = self.synthetic_faces()
      peak = scoring.scoring_sets(build, "test")["peak"]
      probed = scoring.draw_images(build, "test", factors.SCORING_STREAM, PROBE_PER_CLASS,
                                   scoring.PEAK_INTENSITIES)
      self._scoring_set = (first_people(peak, self.config.decgan.eval_people), readers, probed)
    scoring_set, readers, probed = self._scoring_set
    variables = {"params": state.params}
    method = scoring.Method(
        lambda inputs, labels: decgan_inference.class_transfers(self.model, variables, inputs),
        own_reader=functools.partial(decgan_inference.expression_classes, self.model,
                                     variables))
    figures = scoring.score(method, scoring_set, readers)
    figures.update({f"z_probe_{name}": value
                    for name, value in code_probes(self.model, variables, probed).items()})
    logging.info("%s", transfer_line(step, figures))
    metrics = {f"transfer/{name}": float(figures[name]) for name in TRANSFER_FIGURES}
    writer.write_scalars(step, {f"eval/{name}": value for name, value in metrics.items()})
    return metrics

  def periodic_actions(self, workdir: Workdir,
                       writer: Any) -> List[periodic_actions.PeriodicCallback]:
    return loop.sample_and_eval_actions(
        sample_every=self.config.sample_every, eval_every=self.config.eval_every,
        write_samples=lambda state, step: self.write_samples(state, step, workdir),
        evaluate=((lambda state, step: self.score_transfer(state, step, writer))
                  if self.synthetic_faces else None))

  def final_evaluation(self, state: adversarial.AdversarialState, workdir: Workdir,
                       writer: Any) -> Dict[str, float]:
    step = int(state.step)
    self.write_samples(state, step, workdir)
    held_out = self.evaluate_held_out(state, step, writer) if self.eval_batches else {}
    return {**held_out, **self.score_transfer(state, step, writer)}


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
  own_reader = functools.partial(decgan_inference.expression_classes, model, variables)
  conditions = {"one_hot": None,
                "class_mean": decgan_inference.class_mean_conditions(model, variables,
                                                                    train_batches())}

  def method(name, condition):
    transfer = decgan_inference.class_transfer(model, condition)
    return scoring.Method(lambda images, labels: transfer(variables, images), own_reader=own_reader,
                          description=f"G1(E1(x), l_c), l_c = {name.replace('_', ' ')} of c")

  return {name: method(name, condition) for name, condition in conditions.items()}


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
  if config.model.name != "decgan":
    raise ValueError(f"{run.config_file}: model.name={config.model.name!r}, a run of another "
                     "family; expected a DECGAN run (model.name='decgan')")
  state = restore_state(config, run.checkpoints, step, mesh)
  return TrainedModel(config=config, model=create_model(config.model),
                      variables={"params": state.params}, step=int(np.asarray(state.step)))

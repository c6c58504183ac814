"""IF-GAN (and its baseline, the expression classifier E alone) as a task of the training loop, and
a trained one loaded back from its workdir.

Each step updates D on (x, target face of x) against (x, G(x)), then G and E together on
L = w_gan L_cGAN + w_l1 L_L1 + w_softmax L_softmax + w_island L_IL, E seeing both pairs; the
island loss's class centres are a network of the state with a plain SGD rate of their own. Every
update is skipped, and counted, on its own when not finite (`flaxflow.gan.adversarial`). Two
switches take the paper's E apart: `loss.classifier_real_pair=False` trains E on (x, G(x)) alone
(the real pair's second image is the label drawn as a face), and
`loss.classifier_trains_generator=False` stops E's loss at G(x).

The target faces (`config.target_face`, see `flaxflow.analysis.ifgan_ground_truth`: the paper's
per-class pixel mean of the training split, its aligned peak-frame mean, or each image's
average-identity render) are computed once when the task is created, from a pass over the
training split, and kept in the state's `extra`, so a checkpoint carries the targets it was
trained towards.

On synthetic faces the run is also scored against ground truth (`ground_truth_metrics`), during
training and at the end, on the test split's faces redrawn at peak frames and at all
intensities: its held-out metrics hold {"peak": {...}, "all_intensities": {...}} beside the
split's own accuracy.
"""

import dataclasses
import functools
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
                      parallel, scoring)
from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import evaluation
from flaxflow.analysis import ifgan_ground_truth as truth_lib
from flaxflow.data.synthetic_faces import renderer
from flaxflow.gan import adversarial, ifgan, pixels
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.tasks import flow
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir, flatten

Array = jax.Array
Batch = loop.Batch
BatchesFn = Callable[[], Iterable[batches_lib.Batch]]
MODEL_NAMES = tuple(ifgan.MODELS)
# Scores itself against ground truth while it trains: create_task takes synthetic_faces.
TAKES_SYNTHETIC_FACES = True
CENTRES = "centres"
LOSS_WEIGHTS = ("gan_weight", "l1_weight", "softmax_weight", "island_weight")
LOSS_SWITCHES = ("classifier_real_pair", "classifier_trains_generator")
IDENTITY_POSES = 4  # Poses of the identity grid (`ifgan_ground_truth.identity_grid`).
# A synthetic-faces run's build and independent readers, made when asked for.
SyntheticFaces = Callable[[], Tuple[scoring.FaceBuild, scoring.Readers]]


def create_model(model_config: ml_collections.ConfigDict):
  return models.create_from(ifgan.MODELS, model_config)


def init_variables(config: ml_collections.ConfigDict, rng: Array) -> Dict[str, Any]:
  """The variables `class_logits` uses (for checks of a config's model)."""
  model = create_model(config.model)
  images = jnp.zeros((1, *model.image_shape), jnp.float32)
  return model.init({"params": rng}, images, method="class_logits")


def is_synthetic_faces(config: ml_collections.ConfigDict) -> bool:
  return config.dataset.partition("/")[0] == "synthetic_faces"


def batch_features(config: ml_collections.ConfigDict) -> Tuple[str, ...]:
  """IF-GAN's per-image target reads each training image's intensity from its batch."""
  per_image = config.model.name == "ifgan" and config.target_face == "average_identity"
  return ("intensity",) if per_image else ()


def check_config(config: ml_collections.ConfigDict) -> None:
  """The task's fields (the loop checks its own, `flaxflow.loop.check_config`)."""
  config_checks.positive_int(config, "eval_batch_size", "samples_per_class")
  config_checks.non_negative_int(config, "sample_every", "eval_every",
                                 meaning_of_zero="only at the end")
  for weight in LOSS_WEIGHTS:
    config_checks.in_interval(config, f"loss.{weight}", 0, math.inf)
  config_checks.in_interval(config, "loss.island_alpha", 0, math.inf)
  config_checks.positive_finite(config, "loss.centre_learning_rate")
  for switch in LOSS_SWITCHES:
    if not isinstance(config.loss[switch], bool):
      raise ValueError(f"--config.loss.{switch}={config.loss[switch]!r}: expected True or False")
  if config.loss.adversarial not in adversarial.LOSS_KINDS:
    raise ValueError(f"--config.loss.adversarial={config.loss.adversarial!r}: expected one of "
                     f"{', '.join(adversarial.LOSS_KINDS)}")
  if config.target_face not in truth_lib.TARGET_FACES:
    raise ValueError(f"--config.target_face={config.target_face!r}: expected one of "
                     f"{', '.join(truth_lib.TARGET_FACES)}")
  if config.target_face != "class_pixel_mean" and not is_synthetic_faces(config):
    raise ValueError(f"--config.target_face={config.target_face!r}: drawn from the synthetic "
                     f"faces' factors, which {config.dataset} lacks; expected class_pixel_mean")
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
    ifgan.check_generator_fits(config.model.generator_widths, config.model.image_shape)
  optimization.check_optimizer_config(config.optimizer)


@dataclasses.dataclass(frozen=True)
class TrainingSplit:
  """What one pass over the training split gives: each class's pixel mean (in [-1, 1], over
  every process's shard), the first `per_class` images of each class on this process (uint8,
  for sample grids; fewer are repeated), and the number of examples."""
  pixel_means: np.ndarray
  grid_images: np.ndarray
  num_examples: int


def summarize_training_split(batches: Iterable[batches_lib.Batch], class_names: Sequence[str],
                             per_class: int) -> TrainingSplit:
  """One pass over the training split's batches (padded ones with a "mask")."""
  sums, counts, kept = None, np.zeros(len(class_names)), [[] for _ in class_names]
  for batch in batches:
    real = batches_lib.real_rows(batch)
    pictures, labels = np.asarray(batch["image"])[real], np.asarray(batch["label"])[real]
    if sums is None:
      sums = np.zeros((len(class_names), *pictures.shape[1:]), np.float64)
    np.add.at(sums, labels, np.asarray(pixels.from_uint8(pictures), np.float64))
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
                     "targets are faces of every class")
  means = (sums / counts.reshape(-1, *[1] * (sums.ndim - 1))).astype(np.float32)
  grid_images = np.stack([np.resize(np.stack(class_images), (per_class, *sums.shape[1:]))
                          if class_images else np.zeros((per_class, *sums.shape[1:]), np.uint8)
                          for class_images in kept]).astype(np.uint8)
  return TrainingSplit(means, grid_images, int(counts.sum()))


def target_face_table(target_face: str, pixel_means: np.ndarray,
                      build: Optional[scoring.FaceBuild] = None) -> np.ndarray:
  """float32 (classes, levels, H, W, C) in [-1, 1]: the targets of `target_face`
  (`ifgan_ground_truth.TARGET_FACES`): the training split's `pixel_means` (classes, H, W, C), or
  drawn from the synthetic-faces `build`."""
  if target_face == "class_pixel_mean":
    return pixel_means[:, None]
  if target_face not in truth_lib.TARGET_FACES:
    raise ValueError(f"target_face={target_face!r}: expected one of "
                     f"{', '.join(truth_lib.TARGET_FACES)}")
  if build is None:
    raise ValueError(f"target_face={target_face!r} is drawn from a synthetic-faces build; none "
                     "was given")
  if target_face == "aligned_peak_class_mean":
    return truth_lib.aligned_peak_class_means(build.dataset_factors("train"), build.image_size)
  return truth_lib.average_identity_table(build.image_size)


def target_face_shares(build: scoring.FaceBuild) -> Dict[str, Dict[str, float]]:
  """Per target face, its share of the true expression change on the build's training split
  (`ifgan_ground_truth.expression_change_share`): against each image's own average-identity
  render ("own_intensity", 1 for the ideal target) and against the render at full intensity
  ("full_intensity")."""
  drawn, side = build.dataset_factors("train"), build.image_size
  labels = drawn.expression
  images = np.asarray(pixels.from_uint8(renderer.render(*drawn.as_render_args(), side)))
  pixel_means = np.stack([images[labels == label].mean(axis=0)
                          for label in range(truth_lib.NUM_CLASSES)])
  truths = {name: np.asarray(pixels.from_uint8(
                     scoring.average_identity_renders(labels, intensities, side)))
            for name, intensities in (("own_intensity", drawn.intensity),
                                      ("full_intensity", truth_lib.full_intensities(labels)))}
  shares = {}
  for target_face in truth_lib.TARGET_FACES:
    table = target_face_table(target_face, pixel_means, build)
    targets = np.asarray(ifgan.target_faces(table, labels, drawn.intensity))
    shares[target_face] = {name: truth_lib.expression_change_share(targets, truth, labels)
                           for name, truth in truths.items()}
  return shares


class Inference:
  """The model's G and E as numpy functions of any number of images, applied `batch_size` at a
  time (padded), so that each compiles once whatever the count."""

  def __init__(self, model, batch_size: int = 256):
    self.model, self.batch_size = model, batch_size
    self._generate = jax.jit(lambda variables, x: model.apply(variables, x, method="generate"))
    self._classify = jax.jit(lambda variables, *x: jnp.argmax(
        model.apply(variables, *x, method="classify")[0], axis=-1))

  def _in_batches(self, function, variables, *arrays: np.ndarray) -> np.ndarray:
    outputs = []
    for start in range(0, len(arrays[0]), self.batch_size):
      parts = [np.asarray(array[start:start + self.batch_size]) for array in arrays]
      real = len(parts[0])
      parts = [np.concatenate([part, np.zeros((self.batch_size - real, *part.shape[1:]),
                                              part.dtype)]) for part in parts]
      outputs.append(np.asarray(function(variables, *parts))[:real])
    return np.concatenate(outputs)

  def generate(self, variables, images: np.ndarray) -> np.ndarray:
    """G of uint8 `images`, in [-1, 1]."""
    return self._in_batches(self._generate, variables, pixels.from_uint8(images))

  def classes(self, variables, images: np.ndarray, *second: np.ndarray) -> np.ndarray:
    """E's classes of uint8 `images`, paired for IF-GAN with `second` ([-1, 1])."""
    return self._in_batches(self._classify, variables, pixels.from_uint8(images), *second)

  def predictions(self, variables, images: np.ndarray) -> np.ndarray:
    """The model's prediction for uint8 `images`: E(x, G(x)), or E(x) for the baseline."""
    if "generator" in self.model.networks:
      return self.classes(variables, images, self.generate(variables, images))
    return self.classes(variables, images)


def _against_truth(images: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
  """(mean L1 in [0, 1], mean SSIM) of uint8 `images` against the average-identity `truth`."""
  return (float(scoring.metrics.l1_errors(images, truth).mean()),
          float(scoring.metrics.ssim_scores(images, truth).mean()))


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """What a synthetic-faces run is scored on: per regime (`scoring.COLUMNS`) the test faces,
  their identity grid, and the references that do not depend on the model (the readers on the
  inputs and on the ground truth, the inputs against the ground truth); the independent
  readers and the people's reference images their identity measure compares with."""
  sets: Dict[str, truth_lib.FaceSet]
  grids: Dict[str, np.ndarray]
  references: Dict[str, Dict[str, float]]
  readers: scoring.Readers
  people: scoring.Drawn

  def nearest_person_rate(self, images: np.ndarray, faces: truth_lib.FaceSet) -> float:
    """How often the identity measure names each face's own person in `images` (chance 1/K)."""
    return truth_lib.accuracy(self.readers.nearest_people(images, self.people), faces.person)


def ground_truth_of(build: scoring.FaceBuild, readers: scoring.Readers,
                    split: str) -> GroundTruth:
  """`GroundTruth` of the people of `split` of `build`, with its independent `readers`."""
  sets, side = truth_lib.face_sets(build, split), build.image_size
  poses = build.dataset_factors(split).nuisance[:IDENTITY_POSES]
  grids, references = {}, {}
  truth = GroundTruth(sets, grids, references, readers, scoring.reference_images(build, split))
  for regime, (lowest, _) in scoring.COLUMNS.items():
    grids[regime] = truth_lib.identity_grid(build.identities(split), poses, lowest, side)
    faces = sets[regime]
    input_l1, input_ssim = _against_truth(faces.image, faces.truth)
    references[regime] = {
        "reader_accuracy_input": truth_lib.accuracy(readers.read_expressions(faces.image),
                                                    faces.label),
        "reader_accuracy_truth": truth_lib.accuracy(readers.read_expressions(faces.truth),
                                                    faces.label),
        "nearest_person_input": truth.nearest_person_rate(faces.image, faces),
        "nearest_person_truth": truth.nearest_person_rate(faces.truth, faces),
        "input_l1_to_average_identity": input_l1, "input_ssim": input_ssim,
        "num_images": len(faces.label), "num_people": len(build.people(split))}
  return truth


def ground_truth_metrics(inference: Inference, variables, truth: GroundTruth,
                         diagnostics: bool = False) -> Dict[str, Dict[str, float]]:
  """{regime: metrics} of the model against `truth`: "accuracy" of its prediction, beside the
  references; for IF-GAN also G(x) against the average-identity render ("g_l1_to_average_
  identity", "g_ssim"), "expression_kept_ratio" (the independent reader's accuracy on G(x) over
  its accuracy on x), "nearest_person_generated" (how often the identity measure names x's
  person in G(x)), "identity_variance_ratio" (G(x)'s between-person variance over x's),
  "accuracy_with_other_g" (E(x, G(x')) for an x' of another class, against x's label) and
  "other_g_followed" (how often that reads as x''s label). `diagnostics` adds what E reads when
  given instead of G(x) the target face of x's label, of another label, or zeros, and the
  targets against the ground truth."""
  report = {}
  for regime, faces in truth.sets.items():
    metrics = dict(truth.references[regime])
    if "generator" not in inference.model.networks:
      metrics["accuracy"] = truth_lib.accuracy(inference.predictions(variables, faces.image),
                                               faces.label)
      report[regime] = metrics
      continue
    generated = inference.generate(variables, faces.image)
    drawn = np.asarray(pixels.to_uint8(generated))
    classes = functools.partial(inference.classes, variables, faces.image)
    metrics["accuracy"] = truth_lib.accuracy(classes(generated), faces.label)
    metrics["g_l1_to_average_identity"], metrics["g_ssim"] = _against_truth(drawn, faces.truth)
    metrics["reader_accuracy_generated"] = truth_lib.accuracy(
        truth.readers.read_expressions(drawn), faces.label)
    metrics["expression_kept_ratio"] = (metrics["reader_accuracy_generated"]
                                        / metrics["reader_accuracy_input"])
    metrics["nearest_person_generated"] = truth.nearest_person_rate(drawn, faces)
    grid = truth.grids[regime]
    flat = grid.reshape(-1, *grid.shape[2:])
    metrics["identity_variance_ratio"] = truth_lib.identity_variance_ratio(
        grid, np.asarray(pixels.to_uint8(inference.generate(variables, flat))).reshape(grid.shape))
    others = truth_lib.other_class_indices(faces.label)
    with_other_g = classes(generated[others])
    metrics["accuracy_with_other_g"] = truth_lib.accuracy(with_other_g, faces.label)
    metrics["other_g_followed"] = truth_lib.accuracy(with_other_g, faces.label[others])
    if diagnostics:
      table = jnp.asarray(variables["constants"]["target_faces"])
      target_of = lambda labels, table=table, faces=faces: np.asarray(
          ifgan.target_faces(table, labels, faces.intensity))
      metrics["accuracy_with_true_target"] = truth_lib.accuracy(
          classes(target_of(faces.label)), faces.label)
      metrics["accuracy_with_other_target"] = truth_lib.accuracy(
          classes(target_of(truth_lib.other_labels(faces.label))), faces.label)
      metrics["accuracy_with_zeros"] = truth_lib.accuracy(
          classes(np.zeros_like(generated)), faces.label)
      metrics["target_l1_to_average_identity"], metrics["target_ssim"] = _against_truth(
          np.asarray(pixels.to_uint8(target_of(faces.label))), faces.truth)
    report[regime] = metrics
  return report


def held_out_metrics(model, variables, images: Array, labels: Array,
                     rng: Optional[Array]) -> Tuple[Array, Dict[str, Array]]:
  """Accuracy and cross-entropy of the prediction in the form `evaluation.mean_example_metrics`
  takes; for IF-GAN with class targets also the L1 distance of G(x) to x's class target."""
  del rng  # The prediction is deterministic.
  logits = model.apply(variables, objectives.dequantize(None, images, 8), method="class_logits")
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  metrics = {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels),
             "cross_entropy": cross_entropy}
  table = variables.get("constants", {}).get("target_faces")
  if table is not None and table.shape[1] == 1:
    generated = model.apply(variables, pixels.from_uint8(images), method="generate")
    metrics["l1_to_target_face"] = jnp.mean(jnp.abs(generated - ifgan.target_faces(table,
                                                                                   labels)))
  return cross_entropy, metrics


def translation_grid(inference: Inference, variables, grid_images: np.ndarray) -> np.ndarray:
  """uint8 (classes, 1 + 2 * per_class, H, W, C): per class its target face (at full intensity),
  then each input next to G(input)."""
  num_classes, per_class = grid_images.shape[:2]
  flat = grid_images.reshape(-1, *grid_images.shape[2:])
  generated = np.asarray(pixels.to_uint8(inference.generate(variables, flat)))
  generated = generated.reshape(grid_images.shape)
  targets = np.asarray(pixels.to_uint8(variables["constants"]["target_faces"][:, -1]))[:, None]
  pairs = np.stack([grid_images, generated], axis=2).reshape(num_classes, 2 * per_class,
                                                               *grid_images.shape[2:])
  return np.concatenate([targets, pairs], axis=1)


def create_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                image_shape: Sequence[int], class_names: Sequence[str],
                eval_batches: Optional[BatchesFn] = None,
                train_batches: Optional[BatchesFn] = None,
                synthetic_faces: Optional[SyntheticFaces] = None) -> "IFGANTask":
  """The task of training `config.model` on images of `image_shape` in `class_names`;
  `train_batches()` gives one pass over the training split (for the pixel-mean targets and the
  sample grids); on synthetic faces `synthetic_faces()` gives the run's build (for the other
  targets and the test faces) and independent readers, and the run is scored against ground
  truth on `config.eval_split`'s people."""
  check_config(config)
  model = create_model(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  flow.check_eval_batch_size(config, mesh)
  if train_batches is None:
    raise ValueError(f"{config.model.name} needs a pass over the training split (train_batches)")
  split = summarize_training_split(train_batches(), class_names, config.samples_per_class)
  build, truth = None, None
  if synthetic_faces is not None:
    build, readers = synthetic_faces()
    truth = ground_truth_of(build, readers, config.eval_split)
    logging.info("ground truth of %s: %s", config.eval_split, truth.references)
  table = target_face_table(config.target_face, split.pixel_means, build)
  logging.info("%s target faces of %d training examples", config.target_face, split.num_examples)
  return IFGANTask(config, model, mesh, class_names, eval_batches, table, split.grid_images,
                   truth, steps_per_epoch=max(1, split.num_examples // config.batch_size))


class IFGANTask:
  """IF-GAN or the baseline E on {"image": uint8, "label": int32, ...} batches.

  The state is an `adversarial.AdversarialState` over the model's networks and "centres"; its
  `extra` is {"target_faces": (classes, levels, H, W, C) in [-1, 1]} for IF-GAN, None for the
  baseline. Held-out metrics (`held_out_metrics` on `eval_batches`, and with `truth`
  `ground_truth_metrics`) every `config.eval_every` steps and at the end, the end's with E's
  diagnostics; IF-GAN's sample grids (`translation_grid` of `grid_images`, training images)
  every `config.sample_every` steps and at the end (0: only at the end).
  """

  def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh,
               class_names: Sequence[str], eval_batches: Optional[BatchesFn],
               target_faces: np.ndarray, grid_images: np.ndarray,
               truth: Optional[GroundTruth] = None, *, steps_per_epoch: int):
    self.config, self.model, self.mesh = config, model, mesh
    self.class_names, self.eval_batches = list(class_names), eval_batches
    self.target_faces, self.grid_images, self.truth = target_faces, grid_images, truth
    self.adversarial = "generator" in model.networks
    self.inference = Inference(model, config.eval_batch_size)
    self.schedule = optimization.learning_rate_schedule(config.optimizer, config.num_steps,
                                                        steps_per_epoch)
    self.optimizers = {name: optimization.make_optimizer(config.optimizer, config.num_steps,
                                                         steps_per_epoch)
                       for name in model.networks}
    self.optimizers[CENTRES] = optax.sgd(config.loss.centre_learning_rate)

  def init_state(self, batch: Batch, rng: Array) -> adversarial.AdversarialState:
    params_rng, centres_rng = jax.random.split(rng)
    variables = self.model.init(params_rng, pixels.from_uint8(batch["image"]))
    params = {name: variables["params"][name] for name in self.model.networks}
    params[CENTRES] = jax.random.normal(centres_rng, (self.model.num_classes,
                                                      self.model.feature_size))
    extra = ({"target_faces": jnp.asarray(self.target_faces)} if self.adversarial else None)
    return adversarial.init_state(params, self.optimizers, extra=extra)

  def _apply(self, params: Dict[str, Any], *args, method: str):
    networks = {name: params[name] for name in self.model.networks}
    return self.model.apply({"params": networks}, *args, method=method)

  def _classifier_loss(self, params, sources: Sequence[Array], targets: Sequence[Array],
                       labels: Array) -> Tuple[Array, Dict[str, Array]]:
    """w_softmax * (sum over the image sets of E's mean cross-entropy) + w_island * the island
    loss over all of them; `targets` empty for the baseline, which sees the sources alone. The
    accuracy is that of the last set."""
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
    x, labels = pixels.from_uint8(batch["image"]), batch["label"]
    losses = self.config.loss
    if not self.adversarial:
      def classifier_loss(trained):
        loss, metrics = self._classifier_loss({**state.params, **trained}, [x], [], labels)
        return loss, metrics

      state, loss, metrics = adversarial.update_networks(state, ["classifier", CENTRES],
                                                         classifier_loss, self.optimizers)
      return (state.replace(step=state.step + 1),
              adversarial.step_metrics(state, {"loss": loss, **metrics}))

    targets = ifgan.target_faces(state.extra["target_faces"], labels, batch.get("intensity"))
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
      seen = fake if losses.classifier_trains_generator else jax.lax.stop_gradient(fake)
      pairs = [targets, seen] if losses.classifier_real_pair else [seen]
      e_loss, metrics = self._classifier_loss(params, [x] * len(pairs), pairs, labels)
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
    grid = translation_grid(self.inference, self.variables(state), self.grid_images)
    if parallel.is_primary():
      images.save_image_grid(workdir.sample_grid_file(step), grid, self.class_names)

  def evaluate_held_out(self, state: adversarial.AdversarialState, step: int, writer: Any,
                        diagnostics: bool = False) -> Dict[str, Any]:
    """The held-out metrics, with the ground-truth ones nested by regime; logged and written
    flat ("eval/peak.accuracy")."""
    variables = self.variables(state)
    metrics = {}
    if self.eval_batches:
      metrics.update(evaluation.mean_example_metrics(
          self.model, variables, self.eval_batches(), loss_fn=held_out_metrics, mesh=self.mesh,
          rng=loop.stream_key(self.config.seed, "eval")))
    if self.truth:
      metrics.update(ground_truth_metrics(self.inference, variables, self.truth, diagnostics))
    loop.report_eval_metrics(step, flatten(metrics), writer)
    return metrics

  def periodic_actions(self, workdir: Workdir,
                       writer: Any) -> List[periodic_actions.PeriodicCallback]:
    return loop.sample_and_eval_actions(
        sample_every=self.config.sample_every, eval_every=self.config.eval_every,
        write_samples=(lambda state, step: self.write_samples(state, step, workdir))
        if self.adversarial else None,
        evaluate=(lambda state, step: self.evaluate_held_out(state, step, writer))
        if self.eval_batches else None)

  def final_evaluation(self, state: adversarial.AdversarialState, workdir: Workdir,
                       writer: Any) -> Dict[str, Any]:
    step = int(state.step)
    self.write_samples(state, step, workdir)
    if not self.eval_batches:
      return {}
    return self.evaluate_held_out(state, step, writer, diagnostics=True)


def trained_variables(model, state: adversarial.AdversarialState) -> Dict[str, Any]:
  """What `model.apply` takes: the networks' parameters and, for IF-GAN, the target faces as
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
  # The checkpoint holds the target faces; zeros only give the abstract state its shapes.
  levels = truth_lib.INTENSITY_LEVELS if batch_features(config) else 1
  task = IFGANTask(config, model, mesh, (), None,
                   np.zeros((model.num_classes, levels, *shape), np.float32),
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

"""Bits/dim, log-likelihood, and recognition accuracy with a confusion matrix on a test split;
and the mean training metrics on held-out data that a training run logs.

Log-likelihoods are of the discrete n-bit images: the dequantised density minus D log(2**n_bits)
(a lower bound, `flaxflow.objectives`), in nats per image. A class-conditional model is also a
classifier by Bayes' rule, argmax_y log p(x | y) + log p(y): the conditional-Glow classifier with
its learned p(y), the class-conditional Glow and BPLF with a uniform p(y).

Every name says which likelihood it is: "bits_per_dim" / "log_likelihood_nats" are of p(x) (for a
class-conditional model the marginal, log sum_y p(x | y) p(y)); "..._given_label" are of
p(x | y_true). For an SVD model they are of the truncated data (what the model is a density of)
and "raw_..." the same model on the untruncated images.
"""

from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxflow import loop, objectives, parallel
from flaxflow.analysis import batches as batches_lib

Array = jax.Array
LossFn = Callable[..., Tuple[Array, Dict[str, Array]]]


class_log_joint = objectives.class_log_joint


def label_predictor(model: nn.Module, *, n_bits: int
                    ) -> Callable[[Any, np.ndarray], np.ndarray]:
  """`predict_labels` as a function of (variables, images), compiled once for all its calls."""
  predict = jax.jit(lambda variables, images: jnp.argmax(class_log_joint(
      model, variables, objectives.model_input(model, None, images, n_bits)), axis=-1))
  return lambda variables, images: np.asarray(predict(variables, jnp.asarray(images))).astype(
      np.int32)


def predict_labels(model: nn.Module, variables: Any, images: np.ndarray, *,
                   n_bits: int) -> np.ndarray:
  """The model's own labels of uint8 `images` by Bayes' rule (argmax of `class_log_joint`, at the
  bin centres): what research tools condition on in place of test labels, which would leak."""
  return label_predictor(model, n_bits=n_bits)(variables, images)


def example_scores(model: nn.Module, variables: Any, images: Array, labels: Array,
                   rng: Optional[Array], n_bits: int) -> Dict[str, Array]:
  """Per-example log-densities (nats) of dequantised `images` and, if conditional, class scores.

  "log_prob": log p(x), or log p(x | label) for a class-conditional model; for an SVD model of the
  image truncated on its discrete values (`objectives.model_input`), and then also "raw_log_prob"
  of the image as it is, with the same dequantisation noise. "class_log_joint": see
  `class_log_joint`. A model without a likelihood (`has_likelihood` False) gives only its class
  logits, of the images at their bin centres.
  """
  if not model.has_likelihood:
    x = objectives.dequantize(None, images, n_bits)
    return {"class_log_joint": model.apply(variables, x, method="class_logits")}
  x = objectives.model_input(model, rng, images, n_bits)
  labels = model.conditioning_labels(labels)
  scores = {"log_prob": model.apply(variables, x, labels, method="log_prob")}
  if model.truncates_input:
    raw = objectives.model_input(model, rng, images, n_bits, raw=True)
    scores["raw_log_prob"] = model.apply(variables, raw, labels, method="log_prob")
  if model.is_class_conditional:
    scores["class_log_joint"] = class_log_joint(model, variables, x)
  return scores


def score_examples(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
                   n_bits: int, rng: Optional[Array],
                   mesh: Optional[jax.sharding.Mesh] = None) -> Dict[str, np.ndarray]:
  """`example_scores` of every real example of `batches`, with its "label" (and "subject").

  With `rng` each batch gets its own uniform dequantisation noise; with None, the bin centres.
  """

  @jax.jit
  def batch_scores(variables, images, labels, batch_rng):
    return example_scores(model, variables, images, labels, batch_rng, n_bits)

  def run(images, labels, index):
    batch_rng = None if rng is None else jax.random.fold_in(rng, index)
    return batch_scores(variables, images, labels, batch_rng)

  parts = [dict(scores, label=batch["label"])
           for scores, batch in batches_lib.map_batches(run, batches, mesh)]
  if not parts:
    raise ValueError("batches: no batches to evaluate")
  return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def likelihood_metrics(log_prob: np.ndarray, num_dims: int, n_bits: int,
                       suffix: str = "") -> Dict[str, float]:
  """Mean bits/dim and mean discrete log-likelihood (nats per image) from log-densities, named
  "bits_per_dim<suffix>" and "log_likelihood_nats<suffix>"."""
  log_prob = np.asarray(log_prob, np.float64)
  bits = objectives.bits_per_dim(log_prob, num_dims, n_bits)
  return {f"bits_per_dim{suffix}": float(np.mean(bits)),
          f"log_likelihood_nats{suffix}": float(np.mean(log_prob
                                                        - num_dims * n_bits * np.log(2.0)))}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts (num_classes, num_classes): row = true class, column = predicted class."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  for name, values in (("labels", labels), ("predictions", predictions)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f"{name} must lie in [0, {num_classes}), got {values.min()}..{values.max()}")
  counts = np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
  return counts.reshape(num_classes, num_classes)


def recognition_metrics(class_log_joint_scores: np.ndarray, labels: np.ndarray,
                        class_names: Sequence[str]) -> Dict[str, Any]:
  """Accuracy, per-class recall and the confusion matrix of the argmax predictions."""
  num_classes = class_log_joint_scores.shape[-1]
  if len(class_names) != num_classes:
    raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
  matrix = confusion_matrix(labels, np.argmax(class_log_joint_scores, axis=-1), num_classes)
  per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
  return {"accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)),
          "class_recall": dict(zip(class_names, per_class.round(6).tolist())),
          "confusion_matrix": matrix.tolist(), "class_names": list(class_names)}


def evaluation_report(scores: Dict[str, np.ndarray], *, num_dims: int, n_bits: int,
                      class_names: Sequence[str] = ()) -> Dict[str, Any]:
  """The JSON-able summary of `score_examples`' output (see `evaluate`)."""
  conditional = "class_log_joint" in scores
  suffix = "_given_label" if conditional else ""
  report = {"num_examples": int(len(scores["label"]))}
  if "log_prob" in scores:
    report.update(likelihood_metrics(scores["log_prob"], num_dims, n_bits, suffix))
  if "raw_log_prob" in scores:
    report.update({f"raw_{name}": value for name, value in
                   likelihood_metrics(scores["raw_log_prob"], num_dims, n_bits, suffix).items()})
  if conditional:
    log_joint = np.asarray(scores["class_log_joint"], np.float64)
    if "log_prob" in scores:
      marginal = np.logaddexp.reduce(log_joint, axis=-1)
      report.update(likelihood_metrics(marginal, num_dims, n_bits))
    report.update(recognition_metrics(log_joint, scores["label"], class_names))
  return report


def evaluate(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
             n_bits: int, class_names: Sequence[str] = (), rng: Optional[Array] = None,
             mesh: Optional[jax.sharding.Mesh] = None) -> Dict[str, Any]:
  """Likelihood and, for class-conditional models, recognition metrics over `batches`.

  Keys: num_examples, bits_per_dim, log_likelihood_nats (of p(x): for class-conditional models
  the marginal, log p(x) = log sum_y p(x | y) p(y)); for class-conditional models also
  bits_per_dim_given_label, log_likelihood_nats_given_label (log p(x | y_true)), accuracy,
  class_recall, confusion_matrix (rows: true class) and class_names. SVD models: the likelihood
  keys are of the truncated data, and raw_bits_per_dim[_given_label],
  raw_log_likelihood_nats[_given_label] of the untruncated images. A model without a
  likelihood (e.g. IF-GAN) gives no likelihood keys.
  """
  scores = score_examples(model, variables, batches, n_bits=n_bits, rng=rng, mesh=mesh)
  num_dims = int(np.prod(model.image_shape))
  return evaluation_report(scores, num_dims=num_dims, n_bits=n_bits, class_names=class_names)


def mean_example_metrics(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
                         loss_fn: LossFn, mesh: jax.sharding.Mesh,
                         rng: Array) -> Dict[str, float]:
  """The metrics of `loss_fn` averaged over every real example of `batches`.

  Each process passes its own numpy batches {"image", "label", "mask"} (mask optional: False marks
  padding), all of one size, as `data.pipeline.eval_batches` gives them. Metrics are computed per
  example so that padding can be left out exactly.
  """

  @jax.jit
  def batch_sums(variables, batch, batch_rng):
    def example_metrics(image, label, example_rng):
      labels = model.conditioning_labels(label[None])
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
             "mask": batches_lib.real_rows(batch)}
    parallel.check_batch_size(len(local["label"]) * jax.process_count(), mesh)
    sums, weight = jax.device_get(batch_sums(variables, parallel.global_batch_from_local(
        local, sharding), jax.random.fold_in(rng, index)))
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + float(value)
    count += float(weight)
  if count == 0:
    raise ValueError("mean_example_metrics: `batches` yielded no examples")
  return {name: total / count for name, total in totals.items()}


def report_held_out(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
                    loss_fn: LossFn, mesh: jax.sharding.Mesh, seed: int, step: int,
                    writer: Any) -> Dict[str, float]:
  """A training task's held-out evaluation: `mean_example_metrics` with the run's "eval" random
  stream, logged and written as "eval/<name>" at `step`."""
  metrics = mean_example_metrics(model, variables, batches, loss_fn=loss_fn, mesh=mesh,
                                 rng=loop.stream_key(seed, "eval"))
  return loop.report_eval_metrics(step, metrics, writer)

"""Expression transfer and interpolation: `python -m launch.transfer --workdir W`.

A DECGAN run (`decgan_transfer`): every input moved to every expression by G1(E1(x), l_c), the
condition l_c E2's mean p(l) over the training images of c (`--decgan_condition=one_hot`: the
one-hot of c), in W/analysis/transfer.png; every input moved to the expression of one image of
each class by G1(E1(x), p(l | image)) in W/analysis/transfer_by_example.png; on synthetic faces
the ground-truth scores (launch/faces.py) with identity kept and the cycle's L1, in
W/analysis/transfer_ground_truth.json. A flow run:
Each input image is moved to every class c by z + (z̄_c - z̄_other), with class-mean latents over
the training split (flow-latent expression recognition paper, section IV-D), and decoded:
W/analysis/transfer.png shows every input beside its versions in all classes. W/analysis/
interpolation.png decodes straight lines between the latents of pairs of images. On synthetic
faces it also scores the transfer against ground-truth renders (launch/faces.py) and writes
W/analysis/transfer_ground_truth.json.
"""

import functools

import jax
import numpy as np
from absl import app, flags

from flaxflow import analysis, tasks
from flaxflow.analysis import ground_truth
from flaxflow.gan import decgan
from flaxflow.tasks import decgan as decgan_task
from flaxflow.launch import faces, research, runs

_RUN = research.define_run_flags()

_SPLIT = flags.DEFINE_string("split", None, "Split the inputs come from (default: the run's "
                             "eval_split).")
_INPUTS = flags.DEFINE_list("inputs", None, "Indices of the input images in --split (default: the "
                            "first example of each class).")
_ZERO_DEEPEST = flags.DEFINE_bool("zero_deepest", False, "Set f's deepest latent z1 to zero before "
                                  "decoding (every model; the classifier then decodes through f "
                                  "alone, not through h).")
_TRUE_SOURCE_LABELS = flags.DEFINE_bool(
    "true_source_labels", False, "Encode each input with its true test label instead of the "
    "model's prediction: this LEAKS the test label into the latents being moved.")
_STRENGTH = flags.DEFINE_float("strength", 1.0, "Multiplies the class shift z̄_c - z̄_other.")
_PAIRS = flags.DEFINE_list("pairs", None, "Interpolation ends as A:B indices in --split (default: "
                           "each input and the next example of its class).")
_POINTS = flags.DEFINE_integer("interpolation_points", 9, "Images per interpolation, both ends "
                               "included.")
_SCORED_PER_CLASS = flags.DEFINE_integer("scored_per_class", 10, "Synthetic faces: inputs per "
                                         "class scored against ground truth.")
_CONDITION = flags.DEFINE_enum("decgan_condition", "class_mean", ["class_mean", "one_hot"],
                               "DECGAN: the condition of a target class, E2's mean p(l) over the "
                               "training images of the class or its one-hot.")
DECGAN_TABLES = (("identity_kept", "identity kept (subject classifier)"),
                 ("render_identity_kept", "identity kept by the ground-truth render"),
                 ("cycle_l1", "cycle reconstruction L1"),
                 ("e2_target_accuracy", "E2 reads the target"))


def choose_inputs(labels: np.ndarray, indices) -> np.ndarray:
  """--inputs as integers, checked against the split; default: the first example of each class."""
  if indices is None:
    return np.array([np.flatnonzero(labels == label)[0] for label in np.unique(labels)])
  try:
    chosen = np.array([int(index) for index in indices])
  except ValueError:
    raise app.UsageError(f"--inputs={','.join(indices)}: expected integers") from None
  if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= len(labels):
    raise app.UsageError(f"--inputs={','.join(indices)}: expected indices in [0, {len(labels)})")
  return chosen


def choose_pairs(labels: np.ndarray, inputs: np.ndarray, pairs) -> np.ndarray:
  """--pairs as (P, 2) indices; default: each input with the next example of its class."""
  if pairs is None:
    chosen = []
    for index in inputs:
      same_class = np.flatnonzero(labels == labels[index])
      later = same_class[same_class > index]
      if later.size:
        chosen.append((index, later[0]))
    return np.array(chosen, dtype=int).reshape(-1, 2)
  try:
    chosen = np.array([[int(end) for end in pair.split(":")] for pair in pairs])
  except ValueError:
    raise app.UsageError(f"--pairs={','.join(pairs)}: expected A:B index pairs") from None
  if chosen.ndim != 2 or chosen.shape[1] != 2 or chosen.min() < 0 or chosen.max() >= len(labels):
    raise app.UsageError(f"--pairs={','.join(pairs)}: expected A:B pairs of indices in "
                         f"[0, {len(labels)})")
  return chosen


def decgan_transfer(run, split: str, split_batches, info) -> None:
  """DECGAN's transfer.png (every input to every expression by `transfer_to_class`),
  transfer_by_example.png (every input to the expression of each target image by `transfer`)
  and, on synthetic faces, the ground-truth scores."""
  names, model, variables = info.class_names, run.model, run.variables
  conditions = None
  if _CONDITION.value == "class_mean":
    train_batches, _ = research.split_batches(run.config, "train")
    conditions = decgan_task.class_mean_conditions(model, variables, train_batches())
  examples = analysis.collect_examples(split_batches())
  chosen = choose_inputs(examples["label"], _INPUTS.value)
  images, labels = examples["image"][chosen], examples["label"][chosen]
  row_labels = [f"#{index}: {names[label]}" for index, label in zip(chosen, labels)]
  moved = decgan_task.class_transfers(model, variables, images, conditions)
  written = [analysis.save_image_table(
      research.output_path(_RUN, "transfer.png"), np.concatenate([images[:, None], moved], axis=1),
      row_labels, ["input", *(f"→ {name}" for name in names)],
      f"{run.config.dataset} {split}, step {run.step}: G1(E1(x), l_c), l_c = "
      f"{_CONDITION.value.replace('_', ' ')} of c")]
  targets = choose_inputs(examples["label"], None)
  transfer = jax.jit(functools.partial(decgan.transfer, model))
  by_example = np.stack([transfer(variables, images,
                                  np.repeat(examples["image"][[target]], len(images), 0))
                         for target in targets], axis=1)
  written.append(analysis.save_image_table(
      research.output_path(_RUN, "transfer_by_example.png"),
      np.concatenate([examples["image"][targets][None], by_example]),
      ["target images", *row_labels], [f"#{target}: {names[examples['label'][target]]}"
                                       for target in targets],
      f"{run.config.dataset} {split}, step {run.step}: G1(E1(x), p(l | target image))"))
  if faces.is_synthetic_faces(run.config.dataset):
    scores = faces.score_decgan_transfer(run, split, conditions, class_names=names,
                                         per_class=_SCORED_PER_CLASS.value)
    print(f"against ground truth, {scores['inputs']} inputs of {split} ({_CONDITION.value} "
          f"conditions); expression classifier: "
          f"{100 * scores['classifier_accuracy_on_split']:.1f}% on {split}'s images")
    print(f"identity kept {100 * scores['mean_identity_kept']:.1f}% (ground-truth renders "
          f"{100 * scores['mean_render_identity_kept']:.1f}%), cycle L1 "
          f"{scores['mean_cycle_l1']:.4f}, E2 reads the target in "
          f"{100 * scores['mean_e2_target_accuracy']:.1f}%")
    print(ground_truth.format_transfer_scores(scores, DECGAN_TABLES))
    written.append(research.write_json(
        research.output_path(_RUN, "transfer_ground_truth.json"), scores))
  print("\n".join(f"wrote {path}" for path in written))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  run, split, split_batches, info = research.start_on_split(_RUN, _SPLIT)
  if tasks.family_of(run.config) is decgan_task:
    decgan_transfer(run, split, split_batches, info)
    return
  config, n_bits = run.config, run.config.n_bits
  train_batches, _ = research.split_batches(config, "train")
  names = info.class_names
  sums = analysis.class_latent_sums(run.model, run.variables, train_batches(),
                                    num_classes=len(names), n_bits=n_bits)
  examples = analysis.collect_examples(split_batches())
  chosen = choose_inputs(examples["label"], _INPUTS.value)
  images, labels = examples["image"][chosen], examples["label"][chosen]
  sources = faces.source_labels(run, images, labels, _TRUE_SOURCE_LABELS.value)
  moved = analysis.transfer_expressions(run.model, run.variables, images, sources,
                                        sums.expression_shifts(), n_bits=n_bits,
                                        zero_deepest=_ZERO_DEEPEST.value,
                                        strength=_STRENGTH.value)
  row_labels = [f"#{index}: {names[label]}" for index, label in zip(chosen, labels)]
  setting = (f"strength {_STRENGTH.value:g}"
             + (", z1 zeroed" if _ZERO_DEEPEST.value else "")
             + (", true source labels (leak)" if _TRUE_SOURCE_LABELS.value else ""))
  written = [analysis.save_image_table(
      research.output_path(_RUN, "transfer.png"), np.concatenate([images[:, None], moved], axis=1),
      row_labels, ["input", *(f"→ {name}" for name in names)],
      f"{config.dataset} {split}, step {run.step}: z + (z̄_c − z̄_other), {setting}")]
  pairs = choose_pairs(examples["label"], chosen, _PAIRS.value)
  if len(pairs):
    ends_a, ends_b = pairs[:, 0], pairs[:, 1]
    lines = analysis.interpolate(
        run.model, run.variables, examples["image"][ends_a], examples["label"][ends_a],
        examples["image"][ends_b], examples["label"][ends_b], num_points=_POINTS.value,
        n_bits=n_bits)
    label_of = lambda index: names[examples["label"][index]]
    written.append(analysis.save_image_table(
        research.output_path(_RUN, "interpolation.png"), lines,
        [f"#{a} ({label_of(a)}) → #{b} ({label_of(b)})" for a, b in pairs],
        [f"t={t:.2f}" for t in np.linspace(0, 1, _POINTS.value)],
        f"{config.dataset} {split}, step {run.step}: decoded (1 − t) z_a + t z_b"))
  if faces.is_synthetic_faces(config.dataset):
    scores = faces.score_transfer(run, split, sums.expression_shifts(), class_names=names,
                                  per_class=_SCORED_PER_CLASS.value, strength=_STRENGTH.value,
                                  zero_deepest=_ZERO_DEEPEST.value,
                                  true_source_labels=_TRUE_SOURCE_LABELS.value)
    print(f"against ground truth, {scores['inputs']} inputs of {split} ({setting}); expression "
          f"classifier: {100 * scores['classifier_accuracy_on_split']:.1f}% on {split}'s images")
    print(ground_truth.format_transfer_scores(scores))
    written.append(research.write_json(
        research.output_path(_RUN, "transfer_ground_truth.json"), scores))
  print("\n".join(f"wrote {path}" for path in written))


if __name__ == "__main__":
  runs.run_main(main)

"""Expression transfer, scored against ground truth: `python -m launch.transfer --workdir W`.

Every run whose family transfers expressions gives its ways of doing it (`tasks.transfer_methods`,
the headline first): a flow (BPLF, Glow, the conditional-Glow classifier) "class_mean_shift",
each input's latents moved to class c by z + (z̄_c − z̄_other) with class-mean latents over the
training split (flow-latent expression recognition paper, section IV-D) and decoded; DECGAN
"one_hot" and "class_mean", G1(E1(x), l_c) with l_c the one-hot of c or E2's mean p(l) over the
training images of c. In W/analysis (or --output_dir):

* transfer.png: every input (--inputs of --split) beside its transfer to every class by the
  headline method; transfer_<condition set>.png for the others;
* interpolation.png (flows): decoded straight lines between the latents of pairs of images;
* transfer_by_example.png (DECGAN): every input given the expression of one image of each class;
* on synthetic faces, transfer_metrics.json: every method scored by `flaxflow.scoring` on the
  same images rendered of the split's people, peak frames and every intensity, against the
  ground truth, by the independent readers (fitted on first use, then read from
  <data_dir>/synthetic_faces_scoring/); {condition set: {"peak": {...}, "all_intensities":
  {...}}}, printed as a table.
"""

import functools
from typing import List

import jax
import numpy as np
from absl import app, flags

from flaxflow import analysis, scoring, tasks
from flaxflow.analysis import generation
from flaxflow.gan import decgan
from flaxflow.tasks import decgan as decgan_task
from flaxflow.tasks import flow as flow_task
from flaxflow.launch import faces, research, runs

_RUN = research.define_run_flags()

_SPLIT = flags.DEFINE_string("split", None, "Split the inputs and the scored people come from "
                             "(default: the run's eval_split).")
_INPUTS = flags.DEFINE_list("inputs", None, "Indices of the input images in --split (default: the "
                            "first example of each class).")
_ZERO_DEEPEST = flags.DEFINE_bool("zero_deepest", False, "Flows: set f's deepest latent z1 to zero "
                                  "before decoding (every model; the classifier then decodes "
                                  "through f alone, not through h).")
_TRUE_SOURCE_LABELS = flags.DEFINE_bool(
    "true_source_labels", False, "Flows: encode each input with its true test label instead of "
    "the model's prediction: this LEAKS the test label into the latents being moved.")
_STRENGTH = flags.DEFINE_float("strength", 1.0, "Flows: multiplies the class shift "
                               "z̄_c - z̄_other.")
_PAIRS = flags.DEFINE_list("pairs", None, "Flows: interpolation ends as A:B indices in --split "
                           "(default: each input and the next example of its class).")
_POINTS = flags.DEFINE_integer("interpolation_points", 9, "Flows: images per interpolation, both "
                               "ends included.")
_SOURCES_PER_CLASS = flags.DEFINE_integer(
    "sources_per_class", scoring.protocol.SOURCES_PER_CLASS, "Synthetic faces: scored inputs of "
    "each class per person of --split (each moved to the 6 other classes).")


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


def interpolation_figure(run, split: str, examples: dict, chosen: np.ndarray,
                         names) -> List[str]:
  """A flow's interpolation.png: decoded straight lines between the latents of --pairs."""
  pairs = choose_pairs(examples["label"], chosen, _PAIRS.value)
  if not len(pairs):
    return []
  ends_a, ends_b = pairs[:, 0], pairs[:, 1]
  lines = analysis.interpolate(
      run.model, run.variables, examples["image"][ends_a], examples["label"][ends_a],
      examples["image"][ends_b], examples["label"][ends_b], num_points=_POINTS.value,
      n_bits=run.config.n_bits)
  label_of = lambda index: names[examples["label"][index]]
  return [analysis.save_image_table(
      research.output_path(_RUN, "interpolation.png"), lines,
      [f"#{a} ({label_of(a)}) → #{b} ({label_of(b)})" for a, b in pairs],
      [f"t={t:.2f}" for t in np.linspace(0, 1, _POINTS.value)],
      f"{run.config.dataset} {split}, step {run.step}: decoded (1 − t) z_a + t z_b")]


def by_example_figure(run, split: str, examples: dict, chosen: np.ndarray,
                      names) -> List[str]:
  """DECGAN's transfer_by_example.png: every input moved to the expression of the first image of
  each class by G1(E1(x), p(l | target image))."""
  images = examples["image"][chosen]
  targets = choose_inputs(examples["label"], None)
  transfer = jax.jit(functools.partial(decgan.transfer, run.model))
  moved = np.stack([transfer(run.variables, images,
                             np.repeat(examples["image"][[target]], len(images), 0))
                    for target in targets], axis=1)
  return [analysis.save_image_table(
      research.output_path(_RUN, "transfer_by_example.png"),
      np.concatenate([examples["image"][targets][None], moved]),
      ["target images", *row_labels(examples, chosen, names)],
      [f"#{target}: {names[examples['label'][target]]}" for target in targets],
      f"{run.config.dataset} {split}, step {run.step}: G1(E1(x), p(l | target image))")]


# The figures a family adds to its transfers: family(run, split, examples, chosen, class names).
FAMILY_FIGURES = {flow_task: interpolation_figure, decgan_task: by_example_figure}


def row_labels(examples: dict, chosen: np.ndarray, names) -> List[str]:
  return [f"#{index}: {names[examples['label'][index]]}" for index in chosen]


def score_on_ground_truth(run, split: str, methods: dict) -> str:
  """Scores every method on the split's people (`flaxflow.scoring`), prints the table and
  writes transfer_metrics.json; returns its path."""
  readers = faces.scoring_readers(run.config)
  sets = scoring.scoring_sets(faces.scoring_build(run.config), split,
                              per_class=_SOURCES_PER_CLASS.value)
  scores = {name: scoring.score_columns(method, sets, readers) for name, method in methods.items()}
  report = readers.report
  print(f"independent readers (fitted on {report['training_images']} renders of "
        f"{report['training_people']} training people), on the {report['people']} "
        f"{report['split']} people's dataset images, peak frames / every intensity: expression "
        f"{100 * report['expression_accuracy']['dataset_peak']:.1f}% / "
        f"{100 * report['expression_accuracy']['dataset_all_intensities']:.1f}%, nearest person "
        f"{100 * report['identity_nearest_person']['dataset_peak']:.1f}% / "
        f"{100 * report['identity_nearest_person']['dataset_all_intensities']:.1f}% (chance "
        f"{100 / report['people']:.1f}%)")
  first = next(iter(next(iter(scores.values())).values()))
  print(f"{first['num_transfers']} transfers of {first['num_sources']} {split} inputs "
        f"({first['people']} people) per column, ground truth at intensity {first['intensity']}:")
  print(scoring.format_scores(scores))
  return research.write_json(research.output_path(_RUN, "transfer_metrics.json"), scores)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _SOURCES_PER_CLASS.value < 1:
    raise app.UsageError(f"--sources_per_class={_SOURCES_PER_CLASS.value}: expected a positive "
                         "integer")
  run, split, split_batches, info = research.start_on_split(_RUN, _SPLIT)
  shift = generation.LatentShift(_STRENGTH.value, _ZERO_DEEPEST.value, _TRUE_SOURCE_LABELS.value)
  train_batches, _ = research.split_batches(run.config, "train")
  names = info.class_names
  try:
    methods = tasks.transfer_methods(run, train_batches, names, shift)
  except ValueError as error:
    raise ValueError(f"--workdir={research.WORKDIR.value}: {error}") from None
  examples = analysis.collect_examples(split_batches())
  chosen = choose_inputs(examples["label"], _INPUTS.value)
  images, labels = examples["image"][chosen], examples["label"][chosen]
  written = []
  for index, (name, method) in enumerate(methods.items()):
    moved = method.transfer(images, labels)
    written.append(analysis.save_image_table(
        research.output_path(_RUN, "transfer.png" if index == 0 else f"transfer_{name}.png"),
        np.concatenate([images[:, None], moved], axis=1), row_labels(examples, chosen, names),
        ["input", *(f"→ {name}" for name in names)],
        f"{run.config.dataset} {split}, step {run.step}: {method.description}"))
  family_figure = FAMILY_FIGURES.get(tasks.family_of(run.config))
  if family_figure is not None:
    written.extend(family_figure(run, split, examples, chosen, names))
  if faces.is_synthetic_faces(run.config.dataset):
    written.append(score_on_ground_truth(run, split, methods))
  print("\n".join(f"wrote {path}" for path in written))


if __name__ == "__main__":
  runs.run_main(main)

"""Synthetic faces' ground truth for the research entry points: the same person, pose, light
and noise redrawn with another expression, to score expression transfer against.

`score_transfer` (flows) and `score_decgan_transfer` are what `python -m launch.transfer` adds
on a synthetic-faces run; the metrics themselves are in `flaxflow.analysis.ground_truth`.
`scoring_build` and `scoring_readers` give a run's build and its independent readers
(`flaxflow.scoring`).
"""

import os

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from flaxflow.data.synthetic_faces import builder as synthetic_faces_builder
from flaxflow.data.synthetic_faces import factors, render
from flaxflow import analysis, objectives, scoring
from flaxflow.tasks import decgan as decgan_task
from flaxflow.tasks.trained import TrainedModel
from flaxflow.analysis import ground_truth
from flaxflow.launch import research, runs

_READ_BATCH = 1024


def is_synthetic_faces(dataset_name: str) -> bool:
  return dataset_name.partition("/")[0] == "synthetic_faces"


def split_with_factors(config: Any, split: str) -> Dict[str, np.ndarray]:
  """Every example of `split` of the run's synthetic-faces dataset with its factors: "image",
  "label", "subject" (str), "identity", "intensity", "nuisance", in the dataset's order."""
  if not is_synthetic_faces(config.dataset):
    raise ValueError(f"config.dataset={config.dataset!r}: only synthetic_faces has ground truth")
  dataset, _ = runs.load_split(config, split)
  parts = list(dataset.batch(_READ_BATCH).as_numpy_iterator())
  examples = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
  examples["subject"] = np.array([subject.decode() for subject in examples["subject"]])
  return examples


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
  """Indices of the first `per_class` examples of each class present, class by class."""
  if per_class < 1:
    raise ValueError(f"per_class={per_class}: expected a positive integer")
  return np.concatenate([np.flatnonzero(labels == label)[:per_class]
                         for label in np.unique(labels)])


def builder_config(config: Any) -> synthetic_faces_builder.SyntheticFacesConfig:
  """The synthetic-faces build that the run `config` reads."""
  if not is_synthetic_faces(config.dataset):
    raise ValueError(f"config.dataset={config.dataset!r}: not a synthetic_faces dataset")
  size = config.dataset.partition("/")[2] or synthetic_faces_builder.DEFAULT_IMAGE_SIZE
  return synthetic_faces_builder.make_config(int(size), **runs.dataset_options(config))


def scoring_build(config: Any) -> scoring.FaceBuild:
  """The people and images of the synthetic-faces build that the run `config` reads."""
  return scoring.FaceBuild.from_options(builder_config(config))


def scoring_readers(config: Any) -> scoring.Readers:
  """The independent readers of the run's build, fitted on first use (about a minute) and kept
  next to the dataset, in <data_dir>/synthetic_faces_scoring/."""
  build = builder_config(config)
  root = synthetic_faces_builder.make_builder(config.data_dir, build.image_size).data_dir_root
  return scoring.load_readers(scoring.FaceBuild.from_options(build),
                              os.path.join(root, "synthetic_faces_scoring"))


def neutral_source_intensity(min_intensity: float) -> float:
  """The intensity a neutral face's transfers are scored at: it has none of its own to keep,
  so the mean of the build's intensities, which are uniform in (min_intensity, 1]."""
  return (1.0 + min_intensity) / 2


def target_renders(examples: Dict[str, np.ndarray], num_classes: int,
                   min_intensity: float = 0.0) -> np.ndarray:
  """uint8 (B, classes, H, W, 1): each example's person, pose, light and noise rendered with
  every class, at the example's own intensity (`neutral_source_intensity(min_intensity)` for
  neutral ones, `min_intensity` being the build's)."""
  batch, side = len(examples["label"]), examples["image"].shape[1]
  targets = np.tile(np.arange(num_classes), batch)
  kept = np.where(examples["label"] == factors.NEUTRAL, neutral_source_intensity(min_intensity),
                  examples["intensity"])
  intensity = np.where(targets == factors.NEUTRAL, 0.0, np.repeat(kept, num_classes))
  images = render(np.repeat(examples["identity"], num_classes, axis=0), targets,
                  intensity.astype(np.float32), np.repeat(examples["nuisance"], num_classes,
                                                          axis=0), side)
  return images.reshape(batch, num_classes, *images.shape[1:])


def unseen_images_of_subjects(config: Any, split: str, num_subjects: int,
                              per_subject: int) -> Dict[str, np.ndarray]:
  """`per_subject` new images of each of the first `num_subjects` people of `split`: drawn as
  the dataset draws its images, with image numbers after the dataset's own, so that no model
  trained on the split has seen them. "image", "label", "subject" (str), "intensity"."""
  build = builder_config(config)
  subjects = list(build.subject_numbers(split))[:num_subjects]
  first = build.images_per_subject
  drawn = factors.image_factors(build.seed, subjects, first + per_subject, build.min_intensity)
  rows = (np.arange(len(subjects))[:, None] * (first + per_subject)
          + first + np.arange(per_subject)).reshape(-1)
  new = drawn[rows]
  return {"image": render(*new.as_render_args(), build.image_size),
          "label": new.expression, "intensity": new.intensity,
          "subject": np.repeat([synthetic_faces_builder.subject_name(subject)
                                for subject in subjects], per_subject)}


def at_bit_depth(images: np.ndarray, n_bits: int) -> np.ndarray:
  """uint8 `images` as a flow of `n_bits` decodes them: each pixel at the bottom of its bin."""
  return np.asarray(objectives.postprocess(objectives.dequantize(None, images, n_bits), n_bits))


def transfer_against_ground_truth(config: Any, split: str,
                                  transfer: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                                  class_names: Sequence[str], per_class: int, n_bits: int
                                  ) -> Dict[str, Any]:
  """`ground_truth.transfer_scores` of `transfer(images, labels)` -> uint8 (B, classes, H, W, 1)
  on the first `per_class` images of each class of `split`, with an expression classifier fitted
  on the training split; also the classifier's accuracy on the split's own images, as its
  reference. Inputs, renders and the classifier's images are taken to `n_bits` first, so that a
  perfect transfer scores 0.

  Returns {"examples": the whole split, "chosen": the inputs, "transferred", "renders": the
  ground truth, "scores"}.
  """
  examples = split_with_factors(config, split)
  examples["image"] = at_bit_depth(examples["image"], n_bits)
  chosen = {key: values[first_per_class(examples["label"], per_class)]
            for key, values in examples.items()}
  transferred = transfer(chosen["image"], chosen["label"])
  train, _ = research.split_examples(config, "train")
  classifier = ground_truth.fit_expression_classifier(at_bit_depth(train["image"], n_bits),
                                                      train["label"])
  predicted = ground_truth.predict_expressions(
      classifier, transferred.reshape(-1, *transferred.shape[2:])).reshape(transferred.shape[:2])
  renders = at_bit_depth(target_renders(chosen, len(class_names),
                                         builder_config(config).min_intensity), n_bits)
  scores = ground_truth.transfer_scores(chosen["image"], chosen["label"], transferred, renders,
                                        predicted, class_names)
  real_accuracy = np.mean(ground_truth.predict_expressions(classifier, examples["image"])
                          == examples["label"])
  return {"examples": examples, "chosen": chosen, "transferred": transferred,
          "renders": renders,
          "scores": {"classifier_accuracy_on_split": float(real_accuracy), **scores}}


def source_labels(run: TrainedModel, images: np.ndarray, labels: np.ndarray,
                  true_labels: bool) -> np.ndarray:
  """The labels `images` are encoded with before a transfer: the model's prediction, or (leaking
  the test label) `labels` themselves when `true_labels`; unconditional models take none."""
  if true_labels or not run.model.is_class_conditional:
    return labels
  return analysis.predict_labels(run.model, run.variables, images, n_bits=run.config.n_bits)


def score_transfer(run: TrainedModel, split: str, shifts: Sequence[np.ndarray], *,
                   class_names: Sequence[str], per_class: int, strength: float,
                   zero_deepest: bool, true_source_labels: bool = False) -> Dict[str, Any]:
  """`transfer_against_ground_truth` of a flow's `analysis.transfer_expressions`, at the run's
  bit depth, each input encoded with `source_labels`."""
  n_bits = run.config.n_bits
  transfer = lambda images, labels: analysis.transfer_expressions(
      run.model, run.variables, images, source_labels(run, images, labels, true_source_labels),
      shifts, n_bits=n_bits, zero_deepest=zero_deepest, strength=strength)
  result = transfer_against_ground_truth(run.config, split, transfer, class_names=class_names,
                                         per_class=per_class, n_bits=n_bits)
  return {"split": split, "step": run.step, "inputs": len(result["chosen"]["label"]),
          "strength": strength, "zero_deepest": zero_deepest,
          "source_labels": "true (leaks)" if true_source_labels else "predicted",
          **result["scores"]}


def score_decgan_transfer(run: TrainedModel, split: str, class_conditions: Optional[np.ndarray],
                          *, class_names: Sequence[str], per_class: int) -> Dict[str, Any]:
  """`transfer_against_ground_truth` of DECGAN's `transfer_to_class` (condition of class c:
  `class_conditions[c]`, or its one-hot when None), at 8 bits, and beside it per source ->
  target pair: "identity_kept", whether a subject classifier fitted on the split's other
  images of the same people (`ground_truth.identity_kept`) names the input's person in the
  transfer, with "render_identity_kept", the same for the ground-truth renders, as reference;
  "cycle_l1", the L1 of the input against its cycle G2(E1(transfer), p(l | input));
  "e2_target_accuracy", how often E2 reads the target in the transfer."""
  model, variables = run.model, run.variables
  transfer = lambda images, labels: decgan_task.class_transfers(model, variables, images,
                                                                class_conditions)
  result = transfer_against_ground_truth(run.config, split, transfer, class_names=class_names,
                                         per_class=per_class, n_bits=8)
  examples, chosen = result["examples"], result["chosen"]
  others = ~np.isin(examples["index"], chosen["index"])
  references = (examples["image"][others], examples["subject"][others],
                examples["label"][others])
  num_classes = len(class_names)
  cycled = decgan_task.class_cycles(model, variables, chosen["image"], class_conditions)
  inputs = np.repeat(chosen["image"][:, None], num_classes, axis=1)
  flat = lambda images: images.reshape(-1, *images.shape[2:])
  read = decgan_task.expression_classes(model, variables, flat(result["transferred"]))
  per_transfer = {
      "identity_kept": ground_truth.identity_kept(result["transferred"], chosen["subject"],
                                                  *references),
      "render_identity_kept": ground_truth.identity_kept(result["renders"], chosen["subject"],
                                                         *references),
      "cycle_l1": ground_truth.l1_errors(flat(cycled), flat(inputs)).reshape(-1, num_classes),
      "e2_target_accuracy": read.reshape(-1, num_classes) == np.arange(num_classes),
  }
  return {"split": split, "step": run.step, "inputs": len(chosen["label"]),
          "condition": "one_hot" if class_conditions is None else "class_mean",
          **result["scores"], **ground_truth.pair_tables(per_transfer, chosen["label"])}

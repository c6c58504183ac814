"""Synthetic faces' ground truth for the research entry points: the same person, pose, light
and noise redrawn with another expression, to score expression transfer against.

`score_transfer` is what `python -m launch.transfer` adds on a synthetic-faces run; the metrics
themselves are in `flaxflow.analysis.ground_truth`.
"""

from typing import Any, Dict, Sequence

import numpy as np

from data import datasets
from data.synthetic_faces import builder as synthetic_faces_builder
from data.synthetic_faces import factors, render
from flaxflow import analysis, objectives
from flaxflow.tasks.trained import TrainedModel
from flaxflow.analysis import ground_truth
from launch import research

# A neutral face has no intensity to keep; its transfers are scored against the mean of the
# dataset's intensities, which are uniform in (0, 1].
NEUTRAL_SOURCE_INTENSITY = 0.5
_READ_BATCH = 1024


def is_synthetic_faces(dataset_name: str) -> bool:
  return dataset_name.partition("/")[0] == "synthetic_faces"


def split_with_factors(config: Any, split: str) -> Dict[str, np.ndarray]:
  """Every example of `split` of the run's synthetic-faces dataset with its factors: "image",
  "label", "subject" (str), "identity", "intensity", "nuisance", in the dataset's order."""
  if not is_synthetic_faces(config.dataset):
    raise ValueError(f"config.dataset={config.dataset!r}: only synthetic_faces has ground truth")
  dataset, _ = datasets.load(config.dataset, split, config.data_dir)
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


def target_renders(examples: Dict[str, np.ndarray], num_classes: int) -> np.ndarray:
  """uint8 (B, classes, H, W, 1): each example's person, pose, light and noise rendered with
  every class, at the example's own intensity (NEUTRAL_SOURCE_INTENSITY for neutral ones)."""
  batch, side = len(examples["label"]), examples["image"].shape[1]
  targets = np.tile(np.arange(num_classes), batch)
  kept = np.where(examples["label"] == factors.NEUTRAL, NEUTRAL_SOURCE_INTENSITY,
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
  if not is_synthetic_faces(config.dataset):
    raise ValueError(f"config.dataset={config.dataset!r}: only synthetic_faces can draw new images")
  builder_config = synthetic_faces_builder.make_config(int(config.dataset.partition("/")[2]))
  subjects = list(builder_config.subject_numbers(split))[:num_subjects]
  first = builder_config.images_per_subject
  drawn = factors.image_factors(builder_config.seed, subjects, first + per_subject)
  rows = (np.arange(len(subjects))[:, None] * (first + per_subject)
          + first + np.arange(per_subject)).reshape(-1)
  new = drawn[rows]
  return {"image": render(*new.as_render_args(), builder_config.image_size),
          "label": new.expression, "intensity": new.intensity,
          "subject": np.repeat([synthetic_faces_builder.subject_name(subject)
                                for subject in subjects], per_subject)}


def average_identity_renders(labels: np.ndarray, intensities: np.ndarray,
                             side: int) -> np.ndarray:
  """uint8 (N, side, side, 1): the average person (`mean_identity`), upright, evenly lit and
  noiseless, with each expression at its intensity: what an ideal IF-GAN generator draws."""
  count = len(labels)
  return render(np.tile(factors.mean_identity(), (count, 1)), np.asarray(labels),
                np.asarray(intensities, np.float32),
                np.tile(factors.NEUTRAL_NUISANCE, (count, 1)), side)


def at_bit_depth(images: np.ndarray, n_bits: int) -> np.ndarray:
  """uint8 `images` as a flow of `n_bits` decodes them: each pixel at the bottom of its bin."""
  return np.asarray(objectives.postprocess(objectives.dequantize(None, images, n_bits), n_bits))


def score_transfer(run: TrainedModel, split: str, shifts: Sequence[np.ndarray], *,
                   class_names: Sequence[str], per_class: int, strength: float,
                   zero_deepest: bool) -> Dict[str, Any]:
  """`ground_truth.transfer_scores` of `analysis.transfer_expressions` on the first `per_class`
  images of each class of `split`, with an expression classifier fitted on the training split;
  also the classifier's accuracy on the split's own images, as its reference. Inputs, renders
  and the classifier's images are taken to the run's bit depth first, so that a perfect
  transfer scores 0."""
  n_bits = run.config.n_bits
  examples = split_with_factors(run.config, split)
  examples["image"] = at_bit_depth(examples["image"], n_bits)
  chosen = {key: values[first_per_class(examples["label"], per_class)]
            for key, values in examples.items()}
  transferred = analysis.transfer_expressions(
      run.model, run.variables, chosen["image"], chosen["label"], shifts,
      n_bits=n_bits, zero_deepest=zero_deepest, strength=strength)
  train, _ = research.split_examples(run.config, "train")
  classifier = ground_truth.fit_expression_classifier(at_bit_depth(train["image"], n_bits),
                                                      train["label"])
  predicted = ground_truth.predict_expressions(
      classifier, transferred.reshape(-1, *transferred.shape[2:])).reshape(transferred.shape[:2])
  scores = ground_truth.transfer_scores(chosen["image"], chosen["label"], transferred,
                                        at_bit_depth(target_renders(chosen, len(class_names)),
                                                     n_bits), predicted,
                                        class_names)
  real_accuracy = np.mean(ground_truth.predict_expressions(classifier, examples["image"])
                          == examples["label"])
  return {"split": split, "step": run.step, "inputs": len(chosen["label"]),
          "strength": strength, "zero_deepest": zero_deepest,
          "classifier_accuracy_on_split": float(real_accuracy), **scores}

"""Synthetic faces for the research entry points: a run's build, its people's independent
readers (`flaxflow.scoring`, which scores transfers against ground truth), and its splits with
every image's factors.
"""

import os
from typing import Any, Dict

import numpy as np

from flaxflow.data.synthetic_faces import builder as synthetic_faces_builder
from flaxflow.data.synthetic_faces import factors, render
from flaxflow import scoring
from flaxflow.launch import runs

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

"""Colour face crops in the generic folder layout (`data.sources.folders`), as a dataset of their
own: BU-EEG's frames as the classifier paper prepares them (6 classes, RGB, 64x64, 29 subjects).

    anger/S01_0001.png  disgust/S01_0002.png  ...  surprise/S29_1234.png

The classes are those whose folders are present, in EmotionSet's order (`records.CLASS_NAMES`),
so BU-EEG's six give labels 0..5 and no empty class for the neutral face it lacks. Images are
taken to be face crops already (the paper crops with a face detector first) and are resized to a
square of the asked size. The test split holds a seeded random `test_fraction` of the subjects,
so no person is in both splits.
"""

from __future__ import annotations

import pathlib
from typing import Dict, Tuple

import cv2
import numpy as np

from flaxflow.data.sources import folders, records

SOURCE = "face_folders"
SPLITS = ("train", "test")
Examples = Dict[str, np.ndarray]  # {"image" uint8 (N, S, S, 3), "label" int32, "subject" str}


def read_color(path: str, size: int) -> np.ndarray:
  """The image at `path` as RGB uint8 (size, size, 3)."""
  image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f"{path}: not a readable image")
  image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_subjects(subjects: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
  """A seeded random `test_fraction` of the distinct `subjects` (at least one, never all)."""
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction}: expected a fraction in (0, 1)")
  names = np.unique(subjects)
  if len(names) < 2:
    raise ValueError(f"{len(names)} subject(s): a subject-disjoint split needs at least 2")
  count = min(max(1, round(test_fraction * len(names))), len(names) - 1)
  return np.random.default_rng(seed).permutation(names)[:count]


def read_splits(root: pathlib.Path, size: int, *, test_fraction: float = 0.2,
                seed: int = 0) -> Tuple[Dict[str, Examples], Tuple[str, ...]]:
  """{"train", "test"} examples of the layout under `root`, and the class names."""
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f"data_dir={root}: no such folder")
  items = list(folders.read(root, SOURCE))
  problems = [item for item in items if isinstance(item, records.Problem)]
  if problems:
    raise ValueError(f"data_dir={root}: {len(problems)} problem(s) in the layout, the first: "
                     f"{problems[0]}")
  if not items:
    raise ValueError(f"data_dir={root}: no images in <label>/<subject>_<anything> folders")
  class_names = tuple(name for name in records.CLASS_NAMES
                      if any(item.label == name for item in items))
  examples = {"image": np.stack([read_color(item.path, size) for item in items]),
              "label": np.array([class_names.index(item.label) for item in items], np.int32),
              "subject": np.array([item.subject for item in items])}
  test = np.isin(examples["subject"], test_subjects(examples["subject"], test_fraction, seed))
  splits = {split: {key: values[rows] for key, values in examples.items()}
            for split, rows in (("train", ~test), ("test", test))}
  return splits, class_names

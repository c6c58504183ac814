"""What every EmotionSet source reader produces: labelled face records and problems.

A reader turns one dataset's native layout into a stream of `Record`s (a labelled grayscale
image that may still need its face found) and `Problem`s (input it could not use, with the
file and line), so that the builder counts, reports and skips bad input the same way for
every source.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterator, Optional, Union

import cv2
import numpy as np

# The EmotionSet classes, in label-index order.
CLASS_NAMES = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")

# Names under which the 7 classes appear in folder layouts; `None` marks an expression that
# is deliberately not one of the classes (its images are left out, not reported).
LABEL_ALIASES = {
    "anger": "anger", "angry": "anger",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "neutral": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "contempt": None,
}


@dataclasses.dataclass(frozen=True)
class Problem:
  """Input that could not be used: where it is and why."""

  path: str
  reason: str
  line: Optional[int] = None

  def __str__(self) -> str:
    where = self.path if self.line is None else f"{self.path}:{self.line}"
    return f"{where}: {self.reason}"


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
  """One labelled image of a face.

  Attributes:
    key: unique within the EmotionSet and stable across builds.
    label: one of `CLASS_NAMES`.
    subject: "<source>/<person id>", or "" where the source does not identify people.
    source: the dataset the record comes from.
    path: the file it comes from (for reports); `line` narrows it down where it helps: the
      line of a CSV or label file, the frame of a video.
    image: decoded grayscale pixels (H, W) uint8, or None to read `path`.
    split: the source's own split, or None to assign one by subject.
    is_face_crop: True when the image is already a face crop (no detection needed).
  """

  key: str
  label: str
  subject: str
  source: str
  path: str
  line: Optional[int] = None
  image: Optional[np.ndarray] = None
  split: Optional[str] = None
  is_face_crop: bool = False

  def problem(self, reason: str) -> Problem:
    return Problem(self.path, reason, self.line)


Item = Union[Record, Problem]
Items = Iterator[Item]


def read_grayscale(path: Union[str, pathlib.Path]) -> Optional[np.ndarray]:
  """Decodes an image file to grayscale uint8 (H, W), or None when it cannot be decoded."""
  try:
    encoded = np.fromfile(path, dtype=np.uint8)
  except OSError:
    return None
  if encoded.size == 0:
    return None
  return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def image_files(directory: pathlib.Path) -> list[pathlib.Path]:
  """The image files directly inside `directory`, sorted by name, hidden files left out."""
  return sorted(
      path for path in directory.iterdir()
      if path.is_file() and not path.name.startswith(".")
      and path.suffix.lower() in IMAGE_SUFFIXES)

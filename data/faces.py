"""Face detection and cropping for the lab datasets, with OpenCV's frontal-face Haar cascade.

The cascade file ships with opencv-python-headless 4.x (`cv2.data.haarcascades`).
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# The cascade's own window is 24 pixels; faces smaller than an eighth of the image are
# treated as background detections in these posed, frontal datasets.
MIN_FACE_PIXELS = 24
MIN_FACE_FRACTION = 1 / 8

Box = Tuple[int, int, int, int]  # x, y, width, height


@functools.lru_cache(maxsize=None)
def _cascade() -> cv2.CascadeClassifier:
  path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f"cannot load the face cascade {path}")
  return cascade


def find_face(gray: np.ndarray) -> Optional[Box]:
  """The largest frontal face in a grayscale uint8 image, or None when there is none."""
  min_side = max(MIN_FACE_PIXELS, int(min(gray.shape) * MIN_FACE_FRACTION))
  boxes = _cascade().detectMultiScale(
      gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
  if len(boxes) == 0:
    return None
  x, y, width, height = max(boxes, key=lambda box: box[2] * box[3])
  return int(x), int(y), int(width), int(height)


def resize(gray: np.ndarray, side: int) -> np.ndarray:
  """Resizes to `side` x `side`: area averaging to shrink, bicubic to enlarge."""
  if gray.shape == (side, side):
    return gray
  shrinking = min(gray.shape) > side
  return cv2.resize(gray, (side, side),
                    interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def crop_face(gray: np.ndarray, side: int) -> Optional[np.ndarray]:
  """The largest face cut out and resized to `side` x `side`, or None when there is none."""
  box = find_face(gray)
  if box is None:
    return None
  x, y, width, height = box
  return resize(gray[y:y + height, x:x + width], side)

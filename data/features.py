"""The TFDS features every face dataset's elements share: image, label and subject."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from flaxflow.data.sources.records import CLASS_NAMES


def face_features(side: int) -> dict:
  """A (side, side) grayscale PNG `image`, a `label` of the 7 classes and a `subject` name."""
  return {
      "image": tfds.features.Image(shape=(side, side, 1), dtype=np.uint8, encoding_format="png"),
      "label": tfds.features.ClassLabel(names=CLASS_NAMES),
      "subject": tfds.features.Text(),
  }

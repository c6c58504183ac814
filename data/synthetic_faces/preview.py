"""A PNG grid for looking at the synthetic faces: people by rows, expressions by columns."""

from __future__ import annotations

import numpy as np
from PIL import Image

from flaxflow.data.synthetic_faces.factors import (CLASS_NAMES, NEUTRAL_NUISANCE, draw_identity,
                                          image_factors, mean_identity)
from flaxflow.data.synthetic_faces.renderer import render

LOW_INTENSITY = 0.3
_GAP = 2  # pixels between tiles, before upscaling


def grid_rows(size: int = 48, seed: int = 0, num_subjects: int = 6) -> np.ndarray:
  """uint8 (rows, 7, size, size): one column per class at full intensity, canonical pose;
  rows are `num_subjects` people, the first of them at LOW_INTENSITY, the average identity,
  and the first person under the nuisance of that person's first 7 dataset images."""
  classes = np.arange(len(CLASS_NAMES))
  people = [draw_identity(seed, subject) for subject in range(num_subjects)]
  full = np.ones(len(classes), np.float32)
  canonical = np.broadcast_to(NEUTRAL_NUISANCE, (len(classes), len(NEUTRAL_NUISANCE)))
  rows = [render(np.broadcast_to(person, (len(classes), len(person))), classes, full,
                 canonical, size) for person in people]
  rows.append(render(np.broadcast_to(people[0], (len(classes), len(people[0]))), classes,
                     full * LOW_INTENSITY, canonical, size))
  average = mean_identity()
  rows.append(render(np.broadcast_to(average, (len(classes), len(average))), classes, full,
                     canonical, size))
  conditions = image_factors(seed, [0], len(classes)).nuisance
  rows.append(render(np.broadcast_to(people[0], (len(classes), len(people[0]))), classes,
                     full, conditions, size))
  return np.stack(rows)[..., 0]


def tile(rows: np.ndarray, upscale: int = 4) -> np.ndarray:
  """(rows, columns, H, W) images as one uint8 picture, separated by white gaps, each pixel
  repeated `upscale` times along both axes."""
  num_rows, num_columns, height, width = rows.shape
  picture = np.full((num_rows * (height + _GAP) - _GAP, num_columns * (width + _GAP) - _GAP),
                    255, np.uint8)
  for row in range(num_rows):
    for column in range(num_columns):
      top, left = row * (height + _GAP), column * (width + _GAP)
      picture[top:top + height, left:left + width] = rows[row, column]
  return np.kron(picture, np.ones((upscale, upscale), np.uint8))


def write_preview(path: str, size: int = 48, seed: int = 0, upscale: int = 4) -> None:
  """Writes `tile(grid_rows(size, seed), upscale)` as a PNG at `path`."""
  Image.fromarray(tile(grid_rows(size, seed), upscale)).save(path)

"""Grids of images as PNG: one row per class, each row labelled with the class name."""

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_MIN_CELL_PIXELS = 48
_PADDING = 2
_BACKGROUND = (255, 255, 255)
_TEXT_COLOUR = (0, 0, 0)


def _check_grid(images: np.ndarray, row_labels: Sequence[str]) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 5 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images of shape {images.shape}: expected (rows, columns, height, width, "
                     "channels) with 1 or 3 channels")
  if images.dtype != np.uint8:
    raise ValueError(f"images of dtype {images.dtype}: expected uint8")
  if row_labels and len(row_labels) != images.shape[0]:
    raise ValueError(f"{len(row_labels)} row_labels for {images.shape[0]} rows of images")
  return images


def _upscale_factor(height: int, width: int) -> int:
  """Integer zoom that makes small images (e.g. 8x8 digits) large enough to see."""
  return max(1, -(-_MIN_CELL_PIXELS // min(height, width)))


def image_grid(images: np.ndarray, row_labels: Sequence[str] = ()) -> Image.Image:
  """An RGB picture of `images` (rows, columns, H, W, C) uint8, with `row_labels` on the left."""
  images = _check_grid(images, row_labels)
  rows, columns, height, width, _ = images.shape
  zoom = _upscale_factor(height, width)
  cell_height, cell_width = height * zoom, width * zoom
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  label_width = max((measure.textbbox((0, 0), label, font=font)[2] for label in row_labels),
                    default=0)
  label_width = label_width + 2 * _PADDING if label_width else 0
  grid = Image.new("RGB", (label_width + columns * (cell_width + _PADDING) + _PADDING,
                           rows * (cell_height + _PADDING) + _PADDING), _BACKGROUND)
  draw = ImageDraw.Draw(grid)
  for row in range(rows):
    top = _PADDING + row * (cell_height + _PADDING)
    if row_labels:
      text_height = draw.textbbox((0, 0), row_labels[row], font=font)[3]
      draw.text((_PADDING, top + (cell_height - text_height) // 2), row_labels[row],
                fill=_TEXT_COLOUR, font=font)
    for column in range(columns):
      rgb = np.broadcast_to(images[row, column], (height, width, 3))
      cell = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
      grid.paste(Image.fromarray(np.ascontiguousarray(cell)),
                 (label_width + _PADDING + column * (cell_width + _PADDING), top))
  return grid


def save_image_grid(path: str, images: np.ndarray, row_labels: Sequence[str] = ()) -> str:
  """Writes `image_grid(images, row_labels)` to `path` as PNG (making its folder); returns path."""
  grid = image_grid(images, row_labels)
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  grid.save(path, format="PNG")
  return path


"""Figures as PNG (matplotlib, no display needed): confusion matrices, t-SNE maps, image tables."""

import os
from typing import Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

_DPI = 100
_MAX_LEGEND_ENTRIES = 20


def save_figure(figure: Figure, path: str) -> str:
  """Writes `figure` as PNG at `path`, its folder created."""
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  figure.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
  return path


def save_confusion_matrix(path: str, matrix: np.ndarray, class_names: Sequence[str],
                          title: str = "") -> str:
  """Rows (true class) normalised to percentages, as colour and text; counts in the row labels."""
  matrix = np.asarray(matrix, np.float64)
  size = len(class_names)
  if matrix.shape != (size, size):
    raise ValueError(f"matrix of shape {matrix.shape} for {size} class_names")
  totals = matrix.sum(axis=1, keepdims=True)
  percent = 100 * matrix / np.maximum(totals, 1)
  figure = Figure(figsize=(1.0 + 0.6 * size, 0.8 + 0.6 * size))
  axes = figure.add_subplot()
  axes.imshow(percent, cmap="Blues", vmin=0, vmax=100)
  for row in range(size):
    for column in range(size):
      axes.text(column, row, f"{percent[row, column]:.0f}", ha="center", va="center", fontsize=8,
                color="white" if percent[row, column] > 50 else "black")
  axes.set_xticks(range(size), class_names, rotation=45, ha="right")
  axes.set_yticks(range(size), [f"{name} ({int(total)})" for name, total in
                                zip(class_names, totals[:, 0])])
  axes.set_xlabel("predicted class")
  axes.set_ylabel("true class (examples)")
  axes.set_title(title or "confusion matrix (% of each true class)", fontsize=9)
  return save_figure(figure, path)


def _scatter_by(axes, embedding: np.ndarray, values: np.ndarray, names: Sequence[str],
                title: str) -> None:
  palette = "tab10" if len(names) <= 10 else "tab20" if len(names) <= 20 else "nipy_spectral"
  cmap = matplotlib.colormaps[palette].resampled(max(len(names), 2))
  for index, name in enumerate(names):
    chosen = values == index
    axes.scatter(embedding[chosen, 0], embedding[chosen, 1], s=6, color=cmap(index), label=name)
  axes.set_title(title, fontsize=9)
  axes.set_xticks([])
  axes.set_yticks([])
  if len(names) <= _MAX_LEGEND_ENTRIES:
    # Outside the axes: inside, points of the scatter show between the entries.
    axes.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5),
                frameon=False)


def save_embedding(path: str, embedding: np.ndarray, labels: np.ndarray,
                   class_names: Sequence[str], subjects: Optional[Sequence[str]] = None,
                   title: str = "") -> str:
  """A 2-D embedding coloured by class and, when `subjects` name any, beside it by subject."""
  embedding = np.asarray(embedding)
  if embedding.ndim != 2 or embedding.shape[1] != 2 or len(embedding) != len(labels):
    raise ValueError(f"embedding of shape {embedding.shape}: expected ({len(labels)}, 2)")
  subjects = None if subjects is None else np.asarray(subjects, str)
  by_subject = subjects is not None and (subjects != "").any()
  figure = Figure(figsize=(10 if by_subject else 5.5, 5))
  panels = figure.subplots(1, 2 if by_subject else 1, squeeze=False)[0]
  _scatter_by(panels[0], embedding, np.asarray(labels), list(class_names), "by class")
  if by_subject:
    names, index = np.unique(subjects, return_inverse=True)
    shown = [name or "(none)" for name in names]
    _scatter_by(panels[1], embedding, index, shown, f"by subject ({len(names)})")
  if title:
    figure.suptitle(title, fontsize=10)
  return save_figure(figure, path)


def save_image_table(path: str, images: np.ndarray, row_labels: Sequence[str],
                     column_labels: Sequence[str], title: str = "") -> str:
  """uint8 images (rows, columns, H, W, C) in a table with a label on every row and column."""
  images = np.asarray(images)
  if images.ndim != 5 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images of shape {images.shape} and dtype {images.dtype}: expected uint8 "
                     "(rows, columns, height, width, 1 or 3)")
  rows, columns = images.shape[:2]
  if len(row_labels) != rows or len(column_labels) != columns:
    raise ValueError(f"{len(row_labels)} row and {len(column_labels)} column labels for a "
                     f"{rows} x {columns} table")
  figure = Figure(figsize=(1.0 + 0.9 * columns, 0.5 + 0.9 * rows))
  cells = figure.subplots(rows, columns, squeeze=False)
  for row in range(rows):
    for column in range(columns):
      axes = cells[row, column]
      image = images[row, column]
      axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0,
                  vmax=255, interpolation="nearest")
      axes.set_xticks([])
      axes.set_yticks([])
      if row == 0:
        axes.set_title(column_labels[column], fontsize=8)
      if column == 0:
        axes.set_ylabel(row_labels[row], fontsize=8, rotation=0, ha="right", va="center")
  if title:
    figure.suptitle(title, fontsize=9)
  return save_figure(figure, path)

"""Training curves of several runs in one figure: the BPLF paper's Fig. 7 (smoothed test NLL of
the ablation rows against epochs)."""

from typing import Mapping, Tuple

import numpy as np
from matplotlib.figure import Figure

from flaxflow.analysis import figures

Curve = Tuple[np.ndarray, np.ndarray]  # (x, y)


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
  """TensorBoard's smoothing: an exponential moving average, debiased so that the first points
  are not pulled towards zero; weight 0 leaves the values as they are."""
  if not 0 <= weight < 1:
    raise ValueError(f"weight={weight}: expected a number in [0, 1)")
  values = np.asarray(values, np.float64)
  smoothed, average = np.empty_like(values), 0.0
  for index, value in enumerate(values):
    average = weight * average + (1 - weight) * value
    smoothed[index] = average / (1 - weight ** (index + 1))
  return smoothed


def steps_to_epochs(steps: np.ndarray, batch_size: int, train_examples: int) -> np.ndarray:
  """Passes over the training set after `steps` updates of `batch_size` examples."""
  if train_examples < 1:
    raise ValueError(f"train_examples={train_examples}: expected a positive number")
  return np.asarray(steps, np.float64) * batch_size / train_examples


def save_curves(path: str, curves: Mapping[str, Curve], *, xlabel: str, ylabel: str,
                title: str = "") -> str:
  """One line per named curve."""
  if not curves:
    raise ValueError("curves: nothing to plot")
  figure = Figure(figsize=(7, 4.5))
  axes = figure.add_subplot()
  for name, (x, y) in curves.items():
    axes.plot(x, y, label=name, linewidth=1.5)
  axes.set_xlabel(xlabel)
  axes.set_ylabel(ylabel)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  if title:
    axes.set_title(title, fontsize=9)
  return figures.save_figure(figure, path)

"""Smoothing, epochs and the curve figure of launch.plot_curves."""

import numpy as np
import pytest
from PIL import Image

from flaxflow.analysis import curves


def test_smoothing_is_a_debiased_moving_average():
  values = np.array([4.0, 2.0, 3.0])
  np.testing.assert_allclose(curves.smooth(values, 0.0), values)
  # Debiased: a constant stays itself from the first point on.
  np.testing.assert_allclose(curves.smooth(np.full(5, 3.0), 0.9), 3.0)
  weight = 0.5
  averages = [0.5 * 4.0, 0.5 * (0.5 * 4.0) + 0.5 * 2.0]
  expected = [averages[0] / (1 - weight), averages[1] / (1 - weight ** 2)]
  np.testing.assert_allclose(curves.smooth(values[:2], weight), expected)
  with pytest.raises(ValueError, match="weight=1"):
    curves.smooth(values, 1)


def test_epochs_and_the_figure(tmp_path):
  np.testing.assert_allclose(curves.steps_to_epochs(np.array([0, 50, 100]), 64, 1600),
                             [0, 2, 4])
  path = curves.save_curves(str(tmp_path / "c.png"), {"a": ([0, 1], [3, 2]),
                                                      "b": ([0, 1], [3, 1])},
                            xlabel="epochs", ylabel="bits/dim")
  with Image.open(path) as image:
    assert image.format == "PNG"
  with pytest.raises(ValueError, match="nothing to plot"):
    curves.save_curves(str(tmp_path / "d.png"), {}, xlabel="x", ylabel="y")

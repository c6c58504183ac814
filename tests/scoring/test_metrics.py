"""Pixel measures against ground truth."""

import numpy as np
import pytest

from flaxflow.scoring import metrics


def test_l1_is_the_mean_absolute_difference_in_unit_range():
  images = np.zeros((2, 4, 4, 1), np.uint8)
  references = images.copy()
  references[0, :2] = 255  # Half of the first image's pixels differ by the full range.
  np.testing.assert_allclose(metrics.l1_errors(images, references), [0.5, 0.0])
  with pytest.raises(ValueError, match=r"expected equal shapes"):
    metrics.l1_errors(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 5, 1)))


def test_changed_pixels_and_the_l1_on_them_and_on_the_rest():
  inputs = np.full((1, 2, 2, 1), 100, np.uint8)
  truths = inputs.copy()
  truths[0, 0, 0] = 109  # changed (9 > 8 levels)
  truths[0, 0, 1] = 108  # not changed
  changed = metrics.changed_pixels(truths, inputs)
  np.testing.assert_array_equal(changed[0, ..., 0], [[True, False], [False, False]])
  assert metrics.masked_l1(inputs, truths, changed) == pytest.approx(9 / 255)
  assert metrics.masked_l1(inputs, truths, ~changed) == pytest.approx(8 / 255 / 3)
  assert metrics.gap_closed(0.0, 0.2) == 1 and metrics.gap_closed(0.2, 0.2) == 0
  assert metrics.gap_closed(0.3, 0.2) < 0  # error added where the truth changes
  assert np.isnan(metrics.masked_l1(inputs, truths, np.zeros_like(changed)))


def test_a_checkerboard_scores_high_and_a_smooth_image_low():
  rng = np.random.default_rng(0)
  smooth = np.tile(np.linspace(60, 200, 32)[None, :, None, None], (4, 1, 32, 1))
  noisy = np.clip(smooth + rng.normal(0, 3, smooth.shape), 0, 255).astype(np.uint8)
  checks = (np.indices((32, 32)).sum(axis=0) % 2 * 2 - 1)[None, ..., None]
  checkered = np.clip(noisy + 8 * checks, 0, 255).astype(np.uint8)
  assert metrics.checkerboard_ratio(noisy, noisy) == 1
  assert metrics.checkerboard_ratio(checkered, noisy) > 5
  assert metrics.checkerboard_ratio(smooth.astype(np.uint8), noisy) < 0.1
  stripes = np.clip(noisy + 8 * (np.arange(32) % 2 * 2 - 1)[None, :, None, None], 0, 255)
  assert metrics.checkerboard_ratio(stripes.astype(np.uint8), noisy) > 5
  with pytest.raises(ValueError, match="H and W even"):
    metrics.period_two_power(np.zeros((1, 5, 4, 1), np.uint8))


def test_bit_depth_keeps_the_bottom_of_each_bin():
  images = np.array([0, 7, 8, 255], np.uint8).reshape(1, 2, 2, 1)
  np.testing.assert_array_equal(metrics.at_bit_depth(images, 5).ravel(), [0, 0, 8, 248])
  np.testing.assert_array_equal(metrics.at_bit_depth(images, 8), images)

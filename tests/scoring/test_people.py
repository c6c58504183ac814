"""The images scoring draws of a build's people."""

import numpy as np
import pytest

from flaxflow import scoring
from flaxflow.data.synthetic_faces import factors, render
from flaxflow.scoring import people
from scoring.helpers import SMALL_BUILD


def test_draws_are_the_same_images_at_another_intensity():
  peak = scoring.draw_images(SMALL_BUILD, "test", factors.SCORING_STREAM, 2,
                             scoring.PEAK_INTENSITIES)
  every = scoring.draw_images(SMALL_BUILD, "test", factors.SCORING_STREAM, 2,
                              scoring.ALL_INTENSITIES)
  assert peak.images.shape == (6 * 7 * 2, 32, 32, 1)
  np.testing.assert_array_equal(peak.person, np.repeat(np.arange(6), 14))
  np.testing.assert_array_equal(peak.factors.nuisance, every.factors.nuisance)
  np.testing.assert_array_equal(peak.factors.expression, every.factors.expression)
  shown = peak.factors.expression != factors.NEUTRAL
  assert np.all(peak.factors.intensity[shown] >= 0.7)
  assert np.all(every.factors.intensity[shown] <= peak.factors.intensity[shown])
  assert np.all(peak.factors.intensity[~shown] == 0)
  # Each person is the build's own: its identity is the dataset's draw of that subject.
  np.testing.assert_array_equal(peak.factors.identity[0],
                                factors.draw_identity(0, SMALL_BUILD.people("test")[0]))


def test_a_build_redraws_its_own_split_and_knows_its_people():
  assert list(SMALL_BUILD.people("test")) == [26, 27, 28, 29, 30, 31]
  drawn = SMALL_BUILD.dataset_factors("test", min_intensity=0.7)
  np.testing.assert_array_equal(
      drawn.expression, factors.image_factors(0, range(26, 32), 16, 0.7).expression)
  assert SMALL_BUILD.key() == "32_seed0_subjects24.2.6_images16"
  with pytest.raises(ValueError, match="expected a number of people for each"):
    scoring.FaceBuild(32, 0, {"train": 2}, 4)


def test_redrawn_expressions_keep_the_person_pose_light_and_noise():
  drawn = scoring.draw_images(SMALL_BUILD, "test", factors.SCORING_STREAM, 1, (0.85, 0.85))
  redrawn = people.with_expressions(drawn.factors, range(7), 0.85)
  images = render(*redrawn.as_render_args(), 32).reshape(len(drawn.images), 7, 32, 32, 1)
  np.testing.assert_array_equal(images[np.arange(len(images)), drawn.factors.expression],
                                drawn.images)
  quiet = render(*people.without_noise(drawn.factors).as_render_args(), 32)
  noisy = drawn.factors.nuisance[:, factors.NUISANCE_FIELDS.index("noise_std")] > 0.005
  assert (quiet[noisy] != drawn.images[noisy]).any(axis=(1, 2, 3)).all()

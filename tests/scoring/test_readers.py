"""The independent readers: they read what they should, ignore what they should, and are fitted
once per build."""

import os

import numpy as np
import pytest

from flaxflow import scoring
from flaxflow.data.synthetic_faces import factors
from flaxflow.scoring import readers as readers_lib
from scoring.helpers import SMALL_BUILD, small_readers


def test_readers_read_new_peoples_expressions_and_find_each_person():
  report = small_readers().report
  # 24 training people, 3 images per class each: weaker than the default build's readers
  # (95% and 100%), far above chance (14% and 1/6).
  assert report["expression_accuracy"]["renders_at_stated_intensity"] >= 0.6
  assert report["identity_nearest_person"]["renders_at_stated_intensity"] >= 0.9
  assert report["identity_nearest_person"]["dataset_peak"] >= 0.8


def test_the_identity_measure_is_not_fooled_by_expression_nor_by_the_average_face():
  readers = small_readers()
  references = scoring.reference_images(SMALL_BUILD, "test")
  faces = scoring.draw_images(SMALL_BUILD, "test", factors.SCORING_STREAM, 1, (0.85, 0.85))
  # Person p's face in the expression of person q's image is still p.
  assert np.mean(readers.nearest_people(faces.images, references) == faces.person) >= 0.9
  average = scoring.average_identity_renders(faces.factors.expression, faces.factors.intensity, 32)
  found = readers.nearest_people(average, references)
  assert np.mean(found == faces.person) <= 2 / 6  # chance: 1/6
  assert readers.report["identity_nearest_person"]["average_identity"] <= 2 / 6


def test_readers_are_fitted_once_and_a_killed_write_leaves_nothing(tmp_path, monkeypatch):
  readers = small_readers()
  monkeypatch.setattr(readers_lib, "fit_readers", lambda build: readers)
  loaded = scoring.load_readers(SMALL_BUILD, str(tmp_path))
  path = readers_lib.cache_path(str(tmp_path), SMALL_BUILD)
  assert os.listdir(tmp_path) == [os.path.basename(path)]
  monkeypatch.setattr(readers_lib, "fit_readers", lambda build: pytest.fail("fitted again"))
  again = scoring.load_readers(SMALL_BUILD, str(tmp_path))
  assert again.report == readers.report == loaded.report
  images = scoring.reference_images(SMALL_BUILD, "test").images
  np.testing.assert_array_equal(again.read_expressions(images), readers.read_expressions(images))

  def killed(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(np, "savez", killed)
  with pytest.raises(KeyboardInterrupt):
    readers.save(str(tmp_path / "other" / "readers.npz"))
  assert os.listdir(tmp_path / "other") == []


def test_readers_refuse_images_of_another_size_or_kind():
  readers = small_readers()
  with pytest.raises(ValueError, match="these readers read 32x32 faces"):
    readers.read_expressions(np.zeros((1, 48, 48, 1), np.uint8))
  with pytest.raises(ValueError, match=r"expected uint8 \(N, H, W, 1\)"):
    readers.read_expressions(np.zeros((1, 32, 32, 3), np.uint8))


def test_gradient_histograms_crop_sides_the_cell_does_not_divide():
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), np.uint8)
  assert readers_lib.gradient_histograms(images, cell=6, bins=8).shape == (3, 5 * 5 * 8)
  assert readers_lib.pooled_pixels(images, 3).shape == (3, 10 * 10)
  with pytest.raises(ValueError, match=r"cell=40"):
    readers_lib.gradient_histograms(images, cell=40)

"""The scoring protocol on its two references: doing nothing and the ground truth."""

import numpy as np
import pytest

from flaxflow import scoring
from flaxflow.scoring import metrics, protocol
from scoring.helpers import SMALL_BUILD, small_readers


@pytest.fixture(scope="module")
def sets():
  return protocol.scoring_sets(SMALL_BUILD, "test")


def test_the_scoring_set_is_every_person_in_every_class_with_its_ground_truth(sets):
  peak, every = sets["peak"], sets["all_intensities"]
  assert peak.sources.images.shape == (6 * 7, 32, 32, 1)
  assert peak.truths.shape == peak.noise_free_truths.shape == (42, 7, 32, 32, 1)
  np.testing.assert_array_equal(peak.sources.factors.nuisance, every.sources.factors.nuisance)
  # A source at the stated intensity is its own class's ground truth; peak sources are close.
  rows = np.arange(42)
  labels = peak.sources.factors.expression
  own = metrics.l1_errors(peak.truths[rows, labels], peak.sources.images)
  other = metrics.l1_errors(peak.truths[rows, (labels + 1) % 7], peak.sources.images)
  assert own.mean() < other.mean() / 2


def test_doing_nothing_closes_no_gap_and_the_truth_closes_it_all(sets):
  readers = small_readers()
  nothing = protocol.score(protocol.Method(protocol.untouched), sets["peak"], readers)
  assert nothing["gap_closed"] == 0
  assert nothing["l1"] == nothing["untouched_l1"] > 0.003
  assert nothing["l1_unchanged_pixels"] < 0.003 < nothing["l1_changed_pixels"]
  assert nothing["checkerboard_ratio"] == pytest.approx(1, abs=0.2)
  assert nothing["target_accuracy"] == nothing["untouched_target_accuracy"] < 0.3
  assert nothing["num_transfers"] == 42 * 6 and nothing["intensity"] == 0.85
  truth = protocol.score(protocol.ground_truth(sets["peak"]), sets["peak"], readers)
  assert truth["gap_closed"] == 1 and truth["l1"] == 0 and truth["ssim"] == pytest.approx(1)
  assert truth["checkerboard_ratio"] == 1
  assert truth["target_accuracy"] == truth["ceiling_target_accuracy"]
  assert truth["identity_kept"] == truth["ceiling_identity_kept"] >= 0.9
  assert 0 < truth["l1_noise_free"] == truth["ceiling_l1_noise_free"] < nothing["untouched_l1"]
  assert nothing["checkerboard_ratio"] == nothing["untouched_checkerboard_ratio"]


def test_the_ceiling_is_the_readers_accuracy_on_the_ground_truth(sets):
  readers, peak = small_readers(), sets["peak"]
  figures = protocol.score(protocol.Method(protocol.untouched), peak, readers)
  labels = peak.sources.factors.expression
  read = readers.read_expressions(peak.truths.reshape(-1, 32, 32, 1)).reshape(42, 7)
  other = np.arange(7)[None] != labels[:, None]
  assert figures["ceiling_target_accuracy"] == pytest.approx(
      np.mean(read[other] == np.tile(np.arange(7), (42, 1))[other]))
  per_class = figures["ceiling_target_accuracy_per_class"]
  assert set(per_class) == set(scoring.people.factors.CLASS_NAMES)


def test_another_persons_face_and_the_average_face_do_not_keep_the_person(sets):
  readers, peak = small_readers(), sets["peak"]
  truths = peak.truths
  # Each input replaced by the ground truth of the next person's input of the same class.
  next_person = lambda images, labels: truths[(np.arange(len(images)) + 7) % len(truths)]
  swapped = protocol.score(protocol.Method(next_person), peak, readers)
  assert swapped["identity_kept"] <= 0.1
  average = lambda images, labels: scoring.average_identity_renders(
      np.tile(np.arange(7), len(images)), np.full(7 * len(images), 0.85, np.float32),
      32).reshape(len(images), 7, 32, 32, 1)
  assert protocol.score(protocol.Method(average), peak, readers)["identity_kept"] <= 2 / 6


def test_a_method_of_5_bits_is_judged_at_5_bits(sets):
  truth = protocol.score(protocol.ground_truth(sets["peak"], n_bits=5), sets["peak"],
                         small_readers())
  assert truth["gap_closed"] == 1 and truth["n_bits"] == 5
  nothing = protocol.score(protocol.Method(protocol.untouched, n_bits=5), sets["peak"],
                           small_readers())
  assert nothing["gap_closed"] == 0


def test_own_classifier_is_read_beside_the_independent_one(sets):
  always_happy = lambda images: np.full(len(images), 3)
  figures = protocol.score(protocol.Method(protocol.ground_truth(sets["peak"]).transfer,
                                           own_reader=always_happy), sets["peak"], small_readers())
  # Happy is the target of one in 7 transfers: 6 per source, 1 for each of 36 not happy.
  assert figures["own_classifier_target_accuracy"] == pytest.approx(36 / (42 * 6))


def test_a_transfer_of_the_wrong_shape_is_refused(sets):
  with pytest.raises(ValueError, match=r"expected uint8 \(28, 7, 32, 32, 1\), every input"):
    protocol.score(protocol.Method(lambda images, labels: images), sets["peak"], small_readers())


def test_scores_print_as_one_line_per_condition_set_and_column(sets):
  figures = protocol.score_columns(protocol.Method(protocol.untouched), sets, small_readers())
  table = protocol.format_scores({"untouched": figures})
  assert table.splitlines()[1].split()[:2] == ["untouched", "peak"]
  assert len(table.splitlines()) == 3

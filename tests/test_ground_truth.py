"""Transfer scored against ground-truth renders, and linear probes of latents."""

import numpy as np
import pytest

from flaxflow.data.synthetic_faces import factors, render
from flaxflow.analysis import ground_truth, probes

NUM_CLASSES = len(factors.CLASS_NAMES)


def faces_of_every_class(people: int, size: int = 32):
  """uint8 (people, classes, size, size, 1): each person of the dataset's draws with every
  expression at intensity 0.8, in that person's first pose, light and noise."""
  drawn = factors.image_factors(0, range(people), images_per_subject=1)
  expression = np.tile(np.arange(NUM_CLASSES), people)
  intensity = np.where(expression == factors.NEUTRAL, 0.0, 0.8).astype(np.float32)
  images = render(np.repeat(drawn.identity, NUM_CLASSES, axis=0), expression, intensity,
                  np.repeat(drawn.nuisance, NUM_CLASSES, axis=0), size)
  return images.reshape(people, NUM_CLASSES, size, size, 1)


class TestTransferScores:

  def scores(self, transferred, renders, sources, predicted=None):
    inputs = renders[np.arange(len(sources)), sources]
    predicted = (np.tile(np.arange(NUM_CLASSES), (len(sources), 1)) if predicted is None
                 else predicted)
    return ground_truth.transfer_scores(inputs, sources, transferred, renders, predicted,
                                        factors.CLASS_NAMES)

  def test_a_perfect_transfer_scores_zero_and_the_untouched_input_does_not(self):
    renders = faces_of_every_class(3)
    sources = np.array([factors.CLASS_NAMES.index(name) for name in ("happy", "neutral", "sad")])
    scores = self.scores(renders, renders, sources)
    assert scores["mean_l1"] == 0 and scores["mean_ssim"] == pytest.approx(1)
    assert scores["mean_target_accuracy"] == 1
    assert scores["mean_input_l1"] > 0.005
    input_l1 = np.array(scores["input_l1"])
    for source in sources:
      assert input_l1[source, source] == 0  # The input is its own class's ground truth.
      others = np.delete(input_l1[source], source)
      assert (others > 0).all()
    unused = np.setdiff1d(np.arange(NUM_CLASSES), sources)
    assert np.isnan(np.array(scores["l1"])[unused]).all()  # No inputs of these sources.

  def test_untouched_inputs_as_the_transfer_score_as_the_reference(self):
    renders = faces_of_every_class(2)
    sources = np.array([0, 3])
    untouched = np.repeat(renders[np.arange(2), sources][:, None], NUM_CLASSES, axis=1)
    scores = self.scores(untouched, renders, sources, predicted=np.repeat(sources[:, None],
                                                                          NUM_CLASSES, axis=1))
    assert scores["mean_l1"] == pytest.approx(scores["mean_input_l1"])
    assert scores["mean_ssim"] < 1 and scores["mean_target_accuracy"] == 0

  def test_mismatched_shapes_are_refused(self):
    with pytest.raises(ValueError, match=r"expected \(1, 7, H, W, C\)"):
      ground_truth.transfer_scores(np.zeros((1, 4, 4, 1)), np.zeros(1, int),
                                   np.zeros((1, 6, 4, 4, 1)), np.zeros((1, 6, 4, 4, 1)),
                                   np.zeros((1, 6), int), factors.CLASS_NAMES)

  def test_pair_means_average_each_source_target_cell(self):
    means = ground_truth.pair_means(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]),
                                    np.array([1, 1, 0]), 2)
    np.testing.assert_array_equal(means, [[np.nan, 2.0], [5.0, np.nan]])


class TestExpressionClassifier:

  @pytest.mark.slow
  def test_recognises_expressions_of_new_people_at_32_pixels(self):
    faces = faces_of_every_class(100)
    train, test = faces[:80], faces[80:]
    labels = lambda faces: np.tile(np.arange(NUM_CLASSES), len(faces))
    flat = lambda faces: faces.reshape(-1, *faces.shape[2:])
    classifier = ground_truth.fit_expression_classifier(flat(train), labels(train))
    predicted = ground_truth.predict_expressions(classifier, flat(test))
    assert (predicted == labels(test)).mean() >= 0.9

  def test_identity_kept_names_the_person_from_their_other_expressions(self):
    faces = faces_of_every_class(8)  # (people, classes, ...), one pose per person.
    subjects = np.repeat(np.arange(8), NUM_CLASSES)
    labels = np.tile(np.arange(NUM_CLASSES), 8)
    references = faces.reshape(-1, *faces.shape[2:])
    kept = ground_truth.identity_kept(faces[:4], np.arange(4), references, subjects, labels)
    assert kept.shape == (4, NUM_CLASSES) and kept.mean() >= 0.8
    # The same faces given to the wrong people are not kept.
    swapped = ground_truth.identity_kept(faces[:4], np.arange(4)[::-1], references, subjects,
                                         labels)
    assert swapped.mean() <= 0.2

  def test_pair_tables_average_each_source_target_pair(self):
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    tables = ground_truth.pair_tables({"v": values}, np.array([0, 1, 1]))
    assert tables["v"] == [[1.0, 2.0], [4.0, 5.0]]
    assert tables["mean_v"] == (2.0 + 3.0 + 5.0) / 3  # Source != target only.


class TestProbes:

  def test_held_out_rows_split_every_group(self):
    groups = np.repeat(np.arange(5), 8)
    test = probes.held_out_within_groups(groups, test_fraction=0.25, seed=1)
    for group in range(5):
      assert test[groups == group].sum() == 2
    single = probes.held_out_within_groups(np.array([0, 1, 1]))
    assert not single[0] and single[1:].sum() == 1  # A lone row stays to fit on.
    with pytest.raises(ValueError, match=r"test_fraction=1"):
      probes.held_out_within_groups(groups, test_fraction=1)

  def test_separable_latents_are_read_and_noise_is_at_chance(self):
    rng = np.random.default_rng(0)
    classes, per_class, dims = 5, 80, 20
    targets = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(size=(classes, dims)) * 3
    separable = centres[targets] + rng.normal(size=(len(targets), dims))
    noise = rng.normal(size=(len(targets), dims))
    test = probes.held_out_within_groups(targets, seed=0)
    assert probes.probe_accuracy(separable, targets, test) >= 0.95
    assert abs(probes.probe_accuracy(noise, targets, test) - 1 / classes) < 0.1

  def test_bad_shapes_and_empty_splits_are_refused(self):
    with pytest.raises(ValueError, match=r"expected \(N, D\)"):
      probes.probe_accuracy(np.zeros((4, 2)), np.zeros(3), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"both to fit on and to test on"):
      probes.probe_accuracy(np.zeros((4, 2)), np.zeros(4), np.zeros(4, bool))

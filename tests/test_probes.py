"""Linear probes of latents."""

import numpy as np
import pytest

from flaxflow.analysis import probes


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

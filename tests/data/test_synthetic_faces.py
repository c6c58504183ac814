"""Synthetic faces: factor draws, the renderer, the builder through `load`, and whether
expressions and people can be told apart."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flaxflow.data import datasets
from flaxflow.data.sources import records
from flaxflow.data.synthetic_faces import (IDENTITY_FIELDS, NEUTRAL_NUISANCE, NUISANCE_FIELDS,
                                  builder, expression_actions, factors, mean_identity, render)
from flaxflow.data.synthetic_faces import __main__ as command_line
from flaxflow.scoring.readers import gradient_histograms

SMALL = dict(subjects={"train": 3, "validation": 1, "test": 2}, images_per_subject=4)
SMALL_SPLITS = {"train": 12, "validation": 4, "test": 8}


def load_small(data_dir, split, size=32):
  return datasets.load(f"synthetic_faces/{size}", split, data_dir=str(data_dir), **SMALL)


def held_out_accuracy(train_features, train_labels, test_features, test_labels) -> float:
  classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
  classifier.fit(train_features, train_labels)
  return classifier.score(test_features, test_labels)


class TestFactors:

  def test_draws_are_fixed_by_their_seeds_and_in_range(self):
    drawn = factors.image_factors(seed=3, subjects=range(5), images_per_subject=20)
    again = factors.image_factors(seed=3, subjects=range(5), images_per_subject=20)
    for field, repeated in zip(drawn.as_render_args(), again.as_render_args()):
      np.testing.assert_array_equal(field, repeated)
    other = factors.image_factors(seed=4, subjects=range(5), images_per_subject=20)
    assert not np.array_equal(drawn.identity, other.identity)
    for column, (low, high) in enumerate(factors.IDENTITY_RANGES.values()):
      assert np.all((drawn.identity[:, column] >= low) & (drawn.identity[:, column] <= high))
    assert set(np.unique(drawn.identity[:, -1])) <= {0.0, 1.0}
    for column, (low, high) in enumerate(factors.NUISANCE_RANGES.values()):
      assert np.all((drawn.nuisance[:, column] >= np.float32(low))
                    & (drawn.nuisance[:, column] <= np.float32(high)))
    neutral = drawn.expression == factors.NEUTRAL
    assert np.all(drawn.intensity[neutral] == 0)
    assert np.all((drawn.intensity[~neutral] > 0) & (drawn.intensity[~neutral] <= 1))

  def test_min_intensity_changes_only_how_strong_each_expression_is(self):
    onsets = factors.image_factors(seed=1, subjects=range(4), images_per_subject=30)
    peaks = factors.image_factors(seed=1, subjects=range(4), images_per_subject=30,
                                  min_intensity=0.7)
    for kept in ("identity", "expression", "nuisance"):
      np.testing.assert_array_equal(getattr(onsets, kept), getattr(peaks, kept))
    shown = peaks.expression != factors.NEUTRAL
    assert np.all(peaks.intensity[~shown] == 0)
    assert np.all((peaks.intensity[shown] > 0.7) & (peaks.intensity[shown] <= 1))
    # The same uniform draw, squeezed into (0.7, 1].
    np.testing.assert_allclose(1 - peaks.intensity[shown],
                               0.3 * (1 - onsets.intensity[shown]), atol=1e-6)

  def test_one_identity_per_person(self):
    drawn = factors.image_factors(seed=0, subjects=[7, 8], images_per_subject=3)
    assert len(np.unique(drawn.identity, axis=0)) == 2
    np.testing.assert_array_equal(drawn.identity[:3], np.repeat(drawn.identity[:1], 3, 0))

  def test_actions_are_the_prototype_scaled_by_intensity(self):
    happy = records.CLASS_NAMES.index("happy")
    np.testing.assert_allclose(expression_actions([happy, happy], [1.0, 0.5]),
                               [factors.EXPRESSION_PROTOTYPES["happy"],
                                np.multiply(0.5, factors.EXPRESSION_PROTOTYPES["happy"])],
                               rtol=1e-6)
    assert not np.any(expression_actions(np.arange(7), np.zeros(7)))
    assert factors.CLASS_NAMES is records.CLASS_NAMES

  def test_the_mean_identity_is_the_middle_of_every_range_without_glasses(self):
    average = mean_identity()
    assert average.shape == (len(IDENTITY_FIELDS),) and average[-1] == 0
    head_width = factors.IDENTITY_RANGES["head_width"]
    assert average[0] == np.float32(sum(head_width) / 2)


class TestRender:

  def drawn(self, count=10):
    return factors.image_factors(seed=0, subjects=range(2), images_per_subject=count // 2)

  def test_is_deterministic_and_independent_of_the_batch(self):
    drawn = self.drawn()
    batch = render(*drawn.as_render_args(), 48)
    assert batch.shape == (10, 48, 48, 1) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, render(*drawn.as_render_args(), 48))
    for index in range(len(drawn)):
      alone = render(*drawn[index].as_render_args(), 48)
      assert alone.shape == (48, 48, 1)
      np.testing.assert_array_equal(alone, batch[index])

  def test_the_noise_comes_from_the_noise_seed(self):
    nuisance = NEUTRAL_NUISANCE.copy()
    nuisance[NUISANCE_FIELDS.index("noise_std")] = 0.05
    first = render(mean_identity(), 4, 0.0, nuisance, 32)
    nuisance[NUISANCE_FIELDS.index("noise_seed")] = 1
    second = render(mean_identity(), 4, 0.0, nuisance, 32)
    assert np.any(first != second)
    assert np.abs(first.astype(int) - second.astype(int)).mean() < 0.1 * 255

  def test_zero_intensity_is_the_neutral_face_for_every_class(self):
    faces = render(np.tile(mean_identity(), (7, 1)), np.arange(7), np.zeros(7),
                   np.tile(NEUTRAL_NUISANCE, (7, 1)), 32)
    np.testing.assert_array_equal(faces, np.repeat(faces[:1], 7, axis=0))

  def test_expressions_change_the_face_more_as_they_grow(self):
    identity, canonical = mean_identity(), NEUTRAL_NUISANCE
    neutral = render(identity, factors.NEUTRAL, 0.0, canonical, 48).astype(int)
    for expression in set(range(7)) - {factors.NEUTRAL}:
      weak, strong = (np.abs(render(identity, expression, amount, canonical, 48) - neutral).sum()
                      for amount in (0.3, 1.0))
      assert 0 < weak < strong, records.CLASS_NAMES[expression]

  def test_is_anti_aliased(self):
    face = render(mean_identity(), factors.NEUTRAL, 0.0, NEUTRAL_NUISANCE, 48)
    levels = set(np.unique(face))
    background = round(255 * 0.5)
    assert len(levels) > 12 and background in levels

  @pytest.mark.parametrize("change,message", [
      (dict(size=4), "size must be an integer of at least 8, got 4"),
      (dict(size=48.0), "size must be an integer"),
      (dict(expression=7), "expression must be integer class indices in .0, 7."),
      (dict(expression=1.0), "expression must be integer class indices"),
      (dict(intensity=1.5), "intensity must lie in .0, 1."),
      (dict(identity=np.zeros(3)), r"identity must have shape \(18,\)"),
      (dict(nuisance=np.zeros((2, 9))), r"nuisance must have shape \(9,\)"),
      (dict(identity=np.full(18, np.nan)), "identity and nuisance must be finite"),
  ])
  def test_bad_arguments_are_named(self, change, message):
    arguments = dict(identity=mean_identity(), expression=3, intensity=1.0,
                     nuisance=NEUTRAL_NUISANCE, size=48) | change
    with pytest.raises(ValueError, match=message):
      render(**arguments)


class TestLoad:

  @pytest.mark.parametrize("size", builder.IMAGE_SIZES)
  def test_element_format(self, tmp_path, size):
    dataset, info = load_small(tmp_path, "train", size)
    spec = dataset.element_spec
    assert set(spec) == {"image", "label", "subject", "identity", "intensity", "nuisance",
                         "index"}
    expected = {"image": (tf.uint8, (size, size, 1)), "label": (tf.int32, ()),
                "subject": (tf.string, ()), "identity": (tf.float32, (len(IDENTITY_FIELDS),)),
                "intensity": (tf.float32, ()), "nuisance": (tf.float32, (len(NUISANCE_FIELDS),)),
                "index": (tf.int32, ())}
    for key, (dtype, shape) in expected.items():
      assert spec[key].dtype == dtype and tuple(spec[key].shape) == shape, key
    assert info == datasets.DatasetInfo(f"synthetic_faces/{size}", records.CLASS_NAMES,
                                        (size, size, 1), SMALL_SPLITS)
    assert len(list(dataset.as_numpy_iterator())) == SMALL_SPLITS["train"]

  def test_images_are_their_factors_rendered(self, tmp_path):
    config = builder.make_config(32, **SMALL)
    for split in builder.SPLITS:
      examples = list(load_small(tmp_path, split)[0].as_numpy_iterator())
      drawn = builder.split_factors(config, split)
      assert sorted(example["index"] for example in examples) == list(range(len(drawn)))
      for example in examples:
        mine = drawn[example["index"]]
        np.testing.assert_array_equal(example["identity"], mine.identity)
        np.testing.assert_array_equal(example["nuisance"], mine.nuisance)
        assert (example["label"], example["intensity"]) == (mine.expression, mine.intensity)
        redrawn = render(example["identity"], example["label"], example["intensity"],
                         example["nuisance"], 32)
        np.testing.assert_array_equal(redrawn, example["image"])

  def test_splits_are_disjoint_by_subject(self, tmp_path):
    people = {split: {example["subject"].decode() for example in
                      load_small(tmp_path, split)[0].as_numpy_iterator()}
              for split in builder.SPLITS}
    assert {split: len(names) for split, names in people.items()} == SMALL["subjects"]
    assert not (people["train"] & people["validation"] or people["train"] & people["test"]
                or people["validation"] & people["test"])
    assert people["test"] == {"synthetic_faces/0004", "synthetic_faces/0005"}

  def test_the_default_configs_are_named_by_size(self, tmp_path):
    assert builder.make_config(48).name == "48"
    assert builder.SyntheticFaces(data_dir=str(tmp_path)).builder_config.image_size == 48
    assert builder.make_config(48, seed=1).name != builder.make_config(48, seed=2).name
    assert builder.make_config(32, **SMALL).name == "32_seed0_subjects3.1.2_images4"
    assert builder.make_config(32, min_intensity=0.7).name == "32_min_intensity0.7"

  def test_a_peak_frame_build_loads_its_own_intensities(self, tmp_path):
    dataset, info = datasets.load("synthetic_faces/32", "test", data_dir=str(tmp_path),
                                  min_intensity=0.8, **SMALL)
    examples = list(dataset.as_numpy_iterator())
    assert info.num_examples == SMALL_SPLITS and len(examples) == SMALL_SPLITS["test"]
    for example in examples:
      assert example["intensity"] > 0.8 or (example["label"] == factors.NEUTRAL
                                            and example["intensity"] == 0)

  @pytest.mark.parametrize("kwargs,message", [
      (dict(name="synthetic_faces/40", split="train"),
       "name: synthetic_faces has the configurations 32, 48, 64, got 'synthetic_faces/40'"),
      (dict(name="synthetic_faces", split="valid"),
       "split: synthetic_faces has no split 'valid'; expected one of train, validation, test"),
      (dict(name="synthetic_faces", split="train", images_per_subject=0),
       "images_per_subject must be a positive integer, got 0"),
      (dict(name="synthetic_faces", split="train", seed=-1),
       "seed must be a non-negative integer, got -1"),
      (dict(name="synthetic_faces", split="train", subjects={"train": 3}),
       "subjects must give a number of people for each of train, validation, test"),
      (dict(name="synthetic_faces", split="train",
            subjects={"train": 3, "validation": 1, "test": 2.5}),
       r"subjects\['test'\] must be a positive integer, got 2.5"),
      (dict(name="synthetic_faces", split="train", min_intensity=1.0),
       r"min_intensity must be a number in \[0, 1\), got 1.0"),
  ])
  def test_bad_arguments_are_named(self, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
      datasets.load(data_dir=str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)

  def test_an_interrupted_build_never_loads(self, tmp_path, monkeypatch):
    generate = builder.SyntheticFaces._generate_examples

    def interrupted(self, split):
      yield from list(generate(self, split))[:2]
      raise KeyboardInterrupt

    monkeypatch.setattr(builder.SyntheticFaces, "_generate_examples", interrupted)
    with pytest.raises(KeyboardInterrupt):
      load_small(tmp_path, "train")
    assert not builder.make_builder(str(tmp_path), 32, **SMALL).is_prepared()
    monkeypatch.setattr(builder.SyntheticFaces, "_generate_examples", generate)
    dataset, info = load_small(tmp_path, "train")
    assert info.num_examples == SMALL_SPLITS
    assert len(list(dataset.as_numpy_iterator())) == SMALL_SPLITS["train"]

  @pytest.mark.slow
  def test_a_killed_build_never_loads(self, tmp_path):
    # The build process kills itself while rendering the test split, after TFDS has written
    # train and validation into its temporary folder.
    script = textwrap.dedent(f"""
        import os, signal
        from flaxflow.data.synthetic_faces import builder
        render = builder.render
        def render_until_test(identity, *rest):
          if len(identity) == {SMALL_SPLITS['test']}:
            os.kill(os.getpid(), signal.SIGKILL)
          return render(identity, *rest)
        builder.render = render_until_test
        builder.build({str(tmp_path)!r}, [32], subjects={SMALL['subjects']!r},
                      images_per_subject={SMALL['images_per_subject']})
        """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            env=os.environ | {"PYTHONPATH": os.getcwd()}, check=False)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    left = list((tmp_path / "synthetic_faces" / builder.make_config(32, **SMALL).name).iterdir())
    assert left and all("incomplete" in path.name for path in left)
    assert not builder.make_builder(str(tmp_path), 32, **SMALL).is_prepared()
    assert load_small(tmp_path, "test")[1].num_examples == SMALL_SPLITS


class TestCommandLine:

  @pytest.mark.slow
  def test_builds_a_size(self, tmp_path, capsys):
    command_line.main(["--data_dir", str(tmp_path), "--config", "32"])
    assert f"synthetic_faces/32: {tmp_path}/synthetic_faces/32/1.0.0" in capsys.readouterr().out
    assert builder.make_builder(str(tmp_path), 32).is_prepared()

  def test_writes_a_preview(self, tmp_path):
    path = tmp_path / "grid.png"
    command_line.main(["--preview", str(path), "--size", "32"])
    picture = tf.io.decode_png(path.read_bytes()).numpy()
    rows, columns = 9, 7  # six people, low intensity, the average person, dataset nuisance
    assert picture.shape == (4 * (rows * 34 - 2), 4 * (columns * 34 - 2), 1)


class TestSeparability:

  @pytest.mark.slow
  def test_every_expression_is_recognised_on_new_people(self):
    # Full-intensity images of 60 training people, recognised on 20 people never seen, by a
    # linear classifier on gradient histograms (raw pixels are too sensitive to where each
    # person's features sit).
    train = factors.image_factors(0, range(60), images_per_subject=10).at_full_intensity()
    test = factors.image_factors(0, range(140, 160), images_per_subject=10).at_full_intensity()
    features = [gradient_histograms(render(*drawn.as_render_args(), 48), cell=6)
                for drawn in (train, test)]
    accuracy = held_out_accuracy(features[0], train.expression, features[1], test.expression)
    assert accuracy >= 0.95

  @pytest.mark.slow
  def test_people_are_told_apart(self):
    # 120 people, 6 images each to learn from and 2 new images each to recognise them on.
    drawn = factors.image_factors(0, range(120), images_per_subject=8)
    people = np.repeat(np.arange(120), 8)
    features = gradient_histograms(render(*drawn.as_render_args(), 48), cell=6)
    held_out = np.tile(np.arange(8) >= 6, 120)
    accuracy = held_out_accuracy(features[~held_out], people[~held_out], features[held_out],
                                 people[held_out])
    assert accuracy >= 0.4  # chance is 1/120

"""EmotionSet built from tiny native-format fixtures: contents, splits, bad input, atomicity."""

import collections
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from native_formats import EXPECTED_FER2013_SPLITS, EXPECTED_VALID

from flaxflow.data import datasets
from flaxflow.data.emotion_set import EmotionSet, assemble, build
from flaxflow.data.emotion_set import __main__ as command_line
from flaxflow.data.sources import records


def contents(examples):
  """Counter of (source, label, subject) over TFDS numpy examples."""
  names = records.CLASS_NAMES
  return collections.Counter((ex["source"].decode(), names[ex["label"]], ex["subject"].decode())
                             for ex in examples)


def all_splits(builder):
  return {split: list(builder.as_dataset(split=split).as_numpy_iterator())
          for split in builder.info.splits}


def not_loadable(data_dir, config):
  with pytest.raises(FileNotFoundError, match="is not built"):
    datasets.load(f"emotion_set/{config}", "train", data_dir=str(data_dir))
  return not EmotionSet(config=config, data_dir=str(data_dir)).is_prepared()


class TestAssemble:

  def test_reads_every_source(self, valid_manual_dir):
    assembly = assemble.assemble(valid_manual_dir, 48)
    assert assembly.problems == []
    found = collections.Counter((e.source, e.label, e.subject) for e in assembly.examples)
    assert found == EXPECTED_VALID
    assert all(e.image.shape == (48, 48, 1) and e.image.dtype == np.uint8
               for e in assembly.examples)
    assert {e.label: e.split for e in assembly.examples if e.source == "fer2013"} == (
        EXPECTED_FER2013_SPLITS)

  def test_reports_every_bad_record(self, malformed_manual_dir):
    root, expected = malformed_manual_dir
    assembly = assemble.assemble(root, 48)
    for location, reason in expected:
      assert any(str(p).startswith(f"{location}: {reason}") for p in assembly.problems), location
    assert len(assembly.problems) == len(expected)
    found = collections.Counter((e.source, e.label, e.subject) for e in assembly.examples)
    assert found == EXPECTED_VALID

  def test_an_empty_manual_dir_is_a_clear_error(self, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no dataset folder; expected any of "
                       "fer2013, ckplus, jaffe, mmi"):
      assemble.assemble(tmp_path, 48)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
      assemble.assemble(tmp_path / "absent", 48)


@pytest.mark.parametrize("num_subjects,sizes", [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)),
                                                (10, (8, 1, 1)), (25, (19, 3, 3))])
def test_subject_splits_are_disjoint_sized_and_fixed(num_subjects, sizes):
  subjects = [f"jaffe/P{i}" for i in range(num_subjects)]
  split_of = assemble.assign_subject_splits(subjects * 3)  # repeats: one split per subject
  assert set(split_of) == set(subjects)
  counts = collections.Counter(split_of.values())
  assert tuple(counts[split] for split in assemble.SPLITS) == sizes
  assert assemble.assign_subject_splits(reversed(subjects)) == split_of


def test_subject_splits_are_drawn_per_source():
  subjects = [f"{source}/P{i}" for source in ("ckplus", "mmi") for i in range(10)]
  split_of = assemble.assign_subject_splits(subjects)
  for source in ("ckplus", "mmi"):
    per_source = collections.Counter(s for subject, s in split_of.items()
                                     if subject.startswith(source))
    assert per_source == {"train": 8, "validation": 1, "test": 1}


def test_count_table_matches_the_papers_layout():
  counts = {"fer2013": {"anger": {"train": 3927, "validation": 354, "test": 654}},
            "jaffe": {"anger": {"train": 30}, "sad": {"test": 31}}}
  table = assemble.count_table(counts, ["anger", "sad"], title="T").splitlines()
  assert table[0] == "T"
  assert table[1].split() == ["label", "fer2013", "jaffe", "total"]
  assert table[2].split() == ["anger", "3927,354,654", "30,0,0", "4965"]
  assert table[3].split() == ["sad", "0,0,0", "0,0,31", "31"]
  assert table[4].split() == ["total", "3927,354,654", "30,0,31", "4996"]


class TestBuild:

  def test_builds_the_expected_dataset(self, valid_manual_dir, tmp_path, capsys):
    (builder,) = build(str(valid_manual_dir), str(tmp_path / "tfds"), ["48"])
    splits = all_splits(builder)
    assert sum(map(contents, splits.values()), collections.Counter()) == EXPECTED_VALID
    subjects_by_split = {split: {ex["subject"] for ex in examples if ex["subject"]}
                         for split, examples in splits.items()}
    for first in splits:
      for second in splits:
        if first != second:
          assert not subjects_by_split[first] & subjects_by_split[second]
    assert all(ex["image"].shape == (48, 48, 1) for examples in splits.values()
               for ex in examples)
    info = builder.info
    assert info.features["label"].names == list(records.CLASS_NAMES)
    assert info.metadata["skipped_records"] == []
    assert info.metadata["counts"]["mmi"] == {"anger": {"test": 3}, "happy": {"train": 1}}
    printed = capsys.readouterr().out
    assert "EmotionSet 48x48: examples per class and source" in printed
    assert any(line.split() == ["total", "2,1,4", "3,1,2", "1,1,2", "1,0,1", "1,0,3", "23"]
               for line in printed.splitlines())

  def test_the_64_config_and_face_crops(self, valid_manual_dir, tmp_path):
    (builder,) = build(str(valid_manual_dir), str(tmp_path / "tfds"), ["64"])
    examples = [ex for examples in all_splits(builder).values() for ex in examples]
    assert {ex["image"].shape for ex in examples} == {(64, 64, 1)}
    fer = [ex["image"] for ex in examples if ex["source"] == b"fer2013"]
    assert {int(image.mean().round()) for image in fer} == {7, 200}  # resized, not cropped
    jaffe = [ex["image"] for ex in examples if ex["source"] == b"jaffe"]
    assert all(image.std() > 10 for image in jaffe)  # a face, not a flat patch

  def test_bad_input_fails_listing_every_problem_and_leaves_nothing(self,
                                                                    malformed_manual_dir,
                                                                    tmp_path):
    root, expected = malformed_manual_dir
    with pytest.raises(assemble.BadInputError) as raised:
      build(str(root), str(tmp_path / "tfds"), ["48"])
    message = str(raised.value)
    assert message.startswith(f"{len(expected)} bad input record(s) under {root}")
    for location, reason in expected:
      assert f"  {location}: {reason}" in message
    assert "skip_bad_records=True" in message
    assert len(raised.value.problems) == len(expected)
    assert not_loadable(tmp_path / "tfds", "48")
    assert not list((tmp_path / "tfds").glob("emotion_set/48/*"))

  def test_skipping_bad_input_records_it(self, malformed_manual_dir, tmp_path):
    root, expected = malformed_manual_dir
    (builder,) = build(str(root), str(tmp_path / "tfds"), ["48"], skip_bad_records=True)
    assert sum(map(contents, all_splits(builder).values()), collections.Counter()) == (
        EXPECTED_VALID)
    reloaded = tfds.builder("emotion_set/48", data_dir=str(tmp_path / "tfds"))
    skipped = reloaded.info.metadata["skipped_records"]
    assert len(skipped) == len(expected)
    for location, reason in expected:
      assert any(line.startswith(f"{location}: {reason}") for line in skipped)

  def test_an_interrupted_build_leaves_nothing_that_loads(self, valid_manual_dir, tmp_path,
                                                          monkeypatch):
    generate = EmotionSet._generate_examples

    def interrupted(self, examples):
      yield from list(generate(self, examples))[:1]
      raise KeyboardInterrupt

    monkeypatch.setattr(EmotionSet, "_generate_examples", interrupted)
    with pytest.raises(KeyboardInterrupt):
      build(str(valid_manual_dir), str(tmp_path / "tfds"), ["48"])
    assert not_loadable(tmp_path / "tfds", "48")
    monkeypatch.setattr(EmotionSet, "_generate_examples", generate)
    (builder,) = build(str(valid_manual_dir), str(tmp_path / "tfds"), ["48"])
    assert sum(info.num_examples for info in builder.info.splits.values()) == 23

  def test_a_killed_builds_incomplete_folder_is_removed_by_the_next_build(self, valid_manual_dir,
                                                                          tmp_path):
    version_dir = EmotionSet(config="48", data_dir=str(tmp_path / "tfds")).data_dir
    stale = os.path.join(os.path.dirname(version_dir),
                         f"incomplete.AB12CD_{os.path.basename(version_dir)}")
    os.makedirs(os.path.join(stale, "leftover"))
    (builder,) = build(str(valid_manual_dir), str(tmp_path / "tfds"), ["48"])
    assert not os.path.exists(stale)
    assert sorted(os.listdir(os.path.dirname(version_dir))) == [os.path.basename(version_dir)]
    assert sum(info.num_examples for info in builder.info.splits.values()) == 23

  def test_rebuild_only_when_asked(self, valid_manual_dir, tmp_path):
    data_dir = str(tmp_path / "tfds")
    build(str(valid_manual_dir), data_dir, ["48"])
    (valid_manual_dir / "kdef" / "happy" / "AF01_HAS.png").unlink()
    (kept,) = build(str(valid_manual_dir), data_dir, ["48"])
    assert kept.info.splits.total_num_examples == 23
    (rebuilt,) = build(str(valid_manual_dir), data_dir, ["48"], overwrite=True)
    assert rebuilt.info.splits.total_num_examples == 22

  def test_skip_bad_records_must_be_a_bool(self):
    with pytest.raises(TypeError, match="skip_bad_records must be True or False"):
      EmotionSet(config="48", skip_bad_records="yes")


class TestCommandLine:

  def test_builds_both_configs(self, valid_manual_dir, tmp_path, capsys):
    command_line.main(["--manual_dir", str(valid_manual_dir), "--data_dir", str(tmp_path)])
    for config in ("48", "64"):
      dataset, info = datasets.load(f"emotion_set/{config}", "test", data_dir=str(tmp_path))
      assert info.num_examples["test"] == 12
    assert f"emotion_set/64: {tmp_path}/emotion_set/64/1.0.0" in capsys.readouterr().out

  def test_bad_input_exits_with_the_list(self, malformed_manual_dir, tmp_path):
    root, expected = malformed_manual_dir
    with pytest.raises(SystemExit) as exited:
      command_line.main(["--manual_dir", str(root), "--data_dir", str(tmp_path),
                         "--config", "64"])
    assert str(exited.value).startswith("EmotionSet not built: 8 bad input record(s)")
    assert not_loadable(tmp_path, "64")
    command_line.main(["--manual_dir", str(root), "--data_dir", str(tmp_path), "--config",
                       "64", "--skip_bad_records"])
    assert datasets.load("emotion_set/64", "train", data_dir=str(tmp_path))[1].num_examples

  def test_missing_manual_dir(self, tmp_path):
    with pytest.raises(SystemExit, match="manual_dir .*absent is not a directory"):
      command_line.main(["--manual_dir", str(tmp_path / "absent")])

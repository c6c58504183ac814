"""The native-format readers: records, labels, subjects and problems with file and line."""

import numpy as np
import pytest
from native_formats import (FACE, fer2013_row, write_ckplus_sequence, write_fer2013, write_image,
                            write_mmi_session)

from flaxflow.data.sources import ckplus, fer2013, folders, jaffe, mmi, records


def split_items(items):
  items = list(items)
  return ([item for item in items if isinstance(item, records.Record)],
          [item for item in items if isinstance(item, records.Problem)])


class TestFer2013:

  def test_rows_become_labelled_crops_in_their_own_split(self, tmp_path):
    write_fer2013(tmp_path, [fer2013_row(0, "Training", value=3), fer2013_row(6, "PublicTest"),
                             fer2013_row(3, "PrivateTest", value=255)])
    found, problems = split_items(fer2013.read(tmp_path / "fer2013"))
    assert problems == []
    assert [(r.label, r.split, r.line, r.subject) for r in found] == [
        ("anger", "train", 2, ""), ("neutral", "validation", 3, ""), ("happy", "test", 4, "")]
    assert all(r.is_face_crop and r.image.shape == (48, 48) and r.image.dtype == np.uint8
               for r in found)
    assert found[0].image.max() == 3 and found[2].image.min() == 255
    assert len({r.key for r in found}) == 3

  def test_pixels_are_row_major(self, tmp_path):
    pixels = " ".join(str(i % 256) for i in range(48 * 48))
    write_fer2013(tmp_path, [f"2,{pixels},Training"])
    (record,), _ = split_items(fer2013.read(tmp_path / "fer2013"))
    assert record.image[0, 5] == 5 and record.image[1, 0] == 48

  def test_header_with_spaces_and_other_column_order(self, tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion, Usage, pixels\n" + f"5,Training,{' '.join(['1'] * 2304)}\n")
    (record,), problems = split_items(fer2013.read(tmp_path))
    assert problems == [] and record.label == "surprise" and record.split == "train"

  def test_every_malformed_row_is_reported_with_its_line(self, tmp_path):
    path = write_fer2013(tmp_path, [
        fer2013_row(1, "Training"),
        fer2013_row(2, "Training", num_pixels=2305),
        fer2013_row(7, "Training"),
        fer2013_row(2, "Validation"),
        "4," + " ".join(["x"] * 2304) + ",Training",
        fer2013_row(4, "Training", value=256),
        "4,Training",
    ])
    found, problems = split_items(fer2013.read(tmp_path / "fer2013"))
    assert [r.line for r in found] == [2]
    assert [(p.path, p.line) for p in problems] == [(str(path), line) for line in range(3, 9)]
    reasons = [p.reason for p in problems]
    assert reasons[0] == "expected 2304 pixel values, found 2305"
    assert reasons[1].startswith("unknown emotion code '7'")
    assert reasons[2].startswith("unknown Usage 'Validation'")
    assert reasons[3] == "pixels must be integers"
    assert reasons[4] == "pixel values must lie in 0..255"
    assert reasons[5] == "expected 3 fields, found 2"
    assert str(problems[0]) == f"{path}:3: expected 2304 pixel values, found 2305"

  def test_missing_column_and_missing_file(self, tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels\n3,1 2\n")
    (problem,) = list(fer2013.read(tmp_path))
    assert problem.line == 1 and "Usage" in problem.reason
    (problem,) = list(fer2013.read(tmp_path / "elsewhere"))
    assert problem.path.endswith("elsewhere/fer2013.csv") and "missing" in problem.reason


  def test_a_byte_order_mark_is_not_part_of_the_header(self, tmp_path):
    path = write_fer2013(tmp_path, [fer2013_row(3, "Training")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (record,), problems = split_items(fer2013.read(path.parent))
    assert problems == [] and record.label == "happy"

  def test_a_latin1_byte_is_a_problem_of_its_line_only(self, tmp_path):
    path = write_fer2013(tmp_path, [fer2013_row(3, "Training"), fer2013_row(2, "Training"),
                                    fer2013_row(4, "Training")])
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"Training", b"Tr\xe9ining")
    path.write_bytes(b"\n".join(lines))
    found, problems = split_items(fer2013.read(path.parent))
    assert [record.line for record in found] == [2, 4]
    assert [str(problem) for problem in problems] == [
        f"{path}:3: holds bytes that are not UTF-8 text"]

  def test_an_unterminated_quote_is_a_problem_with_its_line(self, tmp_path):
    # The open quote swallows the rows after it until the field exceeds the csv size limit.
    path = write_fer2013(tmp_path, [fer2013_row(3, "Training"), '2,"1 2 3',
                                    *[fer2013_row(0, "Training")] * 30])
    found, problems = split_items(fer2013.read(path.parent))
    assert [record.line for record in found] == [2]
    (problem,) = problems
    assert problem.path == str(path) and problem.line == 3
    assert problem.reason.startswith("not valid CSV from here on (field larger than field limit")


class TestCkPlus:

  def test_peak_frames_take_the_label_and_the_first_frame_is_neutral(self, tmp_path):
    frames = write_ckplus_sequence(tmp_path, "S005", "001", num_frames=6, code=7)
    found, problems = split_items(ckplus.read(tmp_path / "ckplus"))
    assert problems == []
    assert [(r.path, r.label) for r in found] == [
        (str(frames[0]), "neutral"), *((str(f), "surprise") for f in frames[3:])]
    assert {r.subject for r in found} == {"ckplus/S005"}
    assert all(r.image is None and not r.is_face_crop for r in found)

  def test_short_sequences_never_label_the_first_frame_as_a_peak(self, tmp_path):
    frames = write_ckplus_sequence(tmp_path, "S011", "004", num_frames=2, code=1)
    found, _ = split_items(ckplus.read(tmp_path / "ckplus"))
    assert [(r.path, r.label) for r in found] == [(str(frames[0]), "neutral"),
                                                  (str(frames[1]), "anger")]

  def test_contempt_keeps_only_the_neutral_frame(self, tmp_path):
    frames = write_ckplus_sequence(tmp_path, "S010", "002", num_frames=4, code=2)
    found, problems = split_items(ckplus.read(tmp_path / "ckplus"))
    assert problems == [] and [(r.path, r.label) for r in found] == [(str(frames[0]), "neutral")]

  def test_unlabelled_sequences_are_not_used(self, tmp_path):
    write_ckplus_sequence(tmp_path, "S005", "001", num_frames=3, code=5)
    write_image(tmp_path / "ckplus" / "cohn-kanade-images" / "S005" / "002" /
                "S005_002_00000001.png")
    found, _ = split_items(ckplus.read(tmp_path / "ckplus"))
    assert all("/001/" in r.path for r in found) and len(found) == 3

  def test_label_without_image_and_unknown_code_are_reported(self, tmp_path):
    write_ckplus_sequence(tmp_path, "S020", "001", num_frames=3, code=4, with_peak_image=False)
    write_ckplus_sequence(tmp_path, "S021", "001", num_frames=3, code=8)
    found, problems = split_items(ckplus.read(tmp_path / "ckplus"))
    assert found == []
    labels = tmp_path / "ckplus" / "Emotion"
    assert [(p.path, p.line) for p in problems] == [
        (str(labels / "S020" / "001" / "S020_001_00000003_emotion.txt"), 1),
        (str(labels / "S021" / "001" / "S021_001_00000003_emotion.txt"), 1)]
    assert problems[0].reason.startswith("label file without its image")
    assert problems[1].reason.startswith("unknown emotion code '8.0000000e+00'")

  def test_a_missing_folder_is_reported(self, tmp_path):
    write_image(tmp_path / "ckplus" / "cohn-kanade-images" / "S1" / "001" / "S1_001_1.png")
    (problem,) = list(ckplus.read(tmp_path / "ckplus"))
    assert problem.path.endswith("Emotion") and "missing" in problem.reason


class TestJaffe:

  def test_names_give_subject_and_label(self, tmp_path):
    for name in ("KA.AN1.39.tiff", "KM.DI3.24.tiff", "NA.SA2.207.TIFF", "UY.NE1.5.tif"):
      write_image(tmp_path / "jaffe" / "nested" / name)
    (tmp_path / "jaffe" / "README").write_text("ignored")
    found, problems = split_items(jaffe.read(tmp_path / "jaffe"))
    assert problems == []
    assert sorted((r.subject, r.label) for r in found) == [
        ("jaffe/KA", "anger"), ("jaffe/KM", "disgust"), ("jaffe/NA", "sad"),
        ("jaffe/UY", "neutral")]

  def test_unexpected_names_are_reported(self, tmp_path):
    write_image(tmp_path / "KA.XX1.39.tiff")
    write_image(tmp_path / "photo.tiff")
    found, problems = split_items(jaffe.read(tmp_path))
    assert found == []
    assert [(p.path.rsplit("/", 1)[1], p.reason[:24]) for p in problems] == [
        ("KA.XX1.39.tiff", "unknown expression code "), ("photo.tiff", "file name is not <subjec")]


class TestMmi:

  def test_a_video_session_gives_its_middle_frames(self, tmp_path):
    write_mmi_session(tmp_path, "1", "S001-001", emotion="3", num_frames=8)
    found, problems = split_items(mmi.read(tmp_path / "mmi"))
    assert problems == []
    assert [(r.label, r.subject, r.line) for r in found] == [("fear", "mmi/S001", i)
                                                             for i in (2, 3, 4)]
    assert all(r.image.shape == FACE.shape and r.image.dtype == np.uint8 for r in found)
    assert len({r.key for r in found}) == 3

  def test_still_images_unlisted_emotions_and_action_unit_sessions(self, tmp_path):
    write_mmi_session(tmp_path, "2", "S002-003", emotion="6", media=".jpg")
    write_mmi_session(tmp_path, "3", "S002-005", emotion="9")
    write_mmi_session(tmp_path, "4", "S003-001", emotion=None)
    found, problems = split_items(mmi.read(tmp_path / "mmi"))
    assert problems == []
    assert [(r.label, r.subject, r.image) for r in found] == [("surprise", "mmi/S002", None)]

  def test_bad_sessions_are_reported(self, tmp_path):
    write_mmi_session(tmp_path, "5", "S004-001", emotion="2", media=None)
    write_mmi_session(tmp_path, "6", "S004-002", emotion="two", media=".jpg")
    write_mmi_session(tmp_path, "7", "take-1", emotion="2", media=".jpg")
    broken = tmp_path / "mmi" / "Sessions" / "8" / "S005-001.xml"
    broken.parent.mkdir()
    broken.write_text("<Metatags>\n<Metatag Name='Emotion' Value='1'>\n")
    (tmp_path / "mmi" / "Sessions" / "9").mkdir()
    (tmp_path / "mmi" / "Sessions" / "9" / "S006-001.avi").write_bytes(b"not a video")
    write_mmi_session(tmp_path, "9", "S006-001", emotion="1", media=None)
    found, problems = split_items(mmi.read(tmp_path / "mmi"))
    assert found == []
    sessions = tmp_path / "mmi" / "Sessions"
    assert [(p.path, p.line, p.reason.split(" (")[0]) for p in problems] == [
        (str(sessions / "5" / "S004-001.xml"), None, "label file without its image or video"),
        (str(sessions / "6" / "S004-002.xml"), None, "Emotion value 'two' is not a number"),
        (str(sessions / "7" / "take-1.xml"), None,
         "file name does not start with the subject"),
        (str(broken), 3, "unreadable XML"),
        (str(sessions / "9" / "S006-001.avi"), None, "cannot read video"),
    ]

  def test_without_sessions_the_generic_layout_is_read(self, tmp_path):
    write_image(tmp_path / "mmi" / "happy" / "S001_001_00040.png")
    (record,), _ = split_items(mmi.read(tmp_path / "mmi"))
    assert (record.label, record.subject, record.source) == ("happy", "mmi/S001", "mmi")


class TestFolders:

  def test_label_folders_and_subject_prefixes(self, tmp_path):
    for path in ("Angry/P1_a.png", "happiness/P1_b.jpg", "SURPRISED/P2_c.bmp",
                 "contempt/P3_d.png", ".hidden/P4_e.png"):
      write_image(tmp_path / path)
    (tmp_path / "fear").mkdir()
    (tmp_path / "fear" / "notes.txt").write_text("not an image")
    found, problems = split_items(folders.read(tmp_path, "kdef"))
    assert problems == []
    assert sorted((r.label, r.subject, r.source) for r in found) == [
        ("anger", "kdef/P1", "kdef"), ("happy", "kdef/P1", "kdef"),
        ("surprise", "kdef/P2", "kdef")]

  def test_images_in_nested_folders_are_reported_not_dropped(self, tmp_path):
    write_image(tmp_path / "faces" / "happy" / "S001_a.png")
    nested = tmp_path / "faces" / "happy" / "session2" / "deeper" / "S002_b.png"
    write_image(nested)
    found, problems = split_items(folders.read(tmp_path / "faces", "faces"))
    assert [record.subject for record in found] == ["faces/S001"]
    assert [str(problem) for problem in problems] == [
        f"{nested}: image in a subfolder of happy/, which is not read; move it into happy/"]

  def test_layout_errors_are_reported(self, tmp_path):
    write_image(tmp_path / "loose_face.png")
    write_image(tmp_path / "smiling" / "P1_a.png")
    write_image(tmp_path / "sad" / "nosubject.png")
    found, problems = split_items(folders.read(tmp_path, "kdef"))
    assert found == []
    assert [(p.path, p.reason[:20]) for p in problems] == [
        (str(tmp_path / "loose_face.png"), "image outside a <lab"),
        (str(tmp_path / "sad" / "nosubject.png"), "file name is not <su"),
        (str(tmp_path / "smiling"), "unknown label folder"),
    ]


def test_read_grayscale_decodes_any_format_and_rejects_garbage(tmp_path):
  for suffix in (".png", ".tiff", ".bmp"):
    path = write_image(tmp_path / f"face{suffix}")
    np.testing.assert_array_equal(records.read_grayscale(path), FACE)
  (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
  (tmp_path / "empty.png").write_bytes(b"")
  assert records.read_grayscale(tmp_path / "bad.png") is None
  assert records.read_grayscale(tmp_path / "empty.png") is None
  assert records.read_grayscale(tmp_path / "absent.png") is None


@pytest.mark.parametrize("alias,label", [("angry", "anger"), ("Sadness", "sad"),
                                         ("joy", "happy"), ("fearful", "fear")])
def test_label_aliases(alias, label):
  assert records.LABEL_ALIASES[alias.lower()] == label

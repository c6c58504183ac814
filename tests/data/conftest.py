"""Fixtures: manual directories holding every EmotionSet source, valid or with bad records."""

import pathlib

import pytest
from native_formats import (NO_FACE, fer2013_row, write_ckplus_sequence, write_fer2013,
                            write_image, write_mmi_session)


@pytest.fixture
def valid_manual_dir(tmp_path) -> pathlib.Path:
  """Every source, all well formed; `native_formats.EXPECTED_VALID` lists what it holds."""
  root = tmp_path / "manual"
  write_fer2013(root, [
      fer2013_row(0, "Training"), fer2013_row(3, "Training", value=200),
      fer2013_row(6, "Training"), fer2013_row(1, "PublicTest"), fer2013_row(4, "PrivateTest"),
      fer2013_row(5, "PrivateTest"),
  ])
  write_ckplus_sequence(root, "S005", "001", num_frames=5, code=3)  # disgust
  write_ckplus_sequence(root, "S010", "002", num_frames=4, code=2)  # contempt: neutral only
  write_ckplus_sequence(root, "S011", "004", num_frames=2, code=5)  # happy, one peak frame
  for name in ("KA.AN1.39.tiff", "KA.HA2.30.tiff", "KM.SU1.14.tiff", "NA.NE1.202.tiff"):
    write_image(root / "jaffe" / "jaffedbase" / name)
  write_mmi_session(root, "1", "S001-001", emotion="1")  # anger, 3 middle frames of 7
  write_mmi_session(root, "2", "S002-003", emotion="4", media=".jpg")  # happy, a still image
  write_mmi_session(root, "3", "S002-005", emotion="9")  # not one of the classes
  write_mmi_session(root, "4", "S003-001", emotion=None)  # action units only
  write_image(root / "kdef" / "happy" / "AF01_HAS.png")
  write_image(root / "kdef" / "Sadness" / "AM02_SAS.jpg")
  write_image(root / "kdef" / "contempt" / "AM02_X.png")  # not a class: left out
  (root / "kdef" / "README.txt").write_text("not an image\n")
  return root


@pytest.fixture
def malformed_manual_dir(valid_manual_dir) -> tuple[pathlib.Path, list[tuple[str, str]]]:
  """`valid_manual_dir` plus one bad record of each kind; returns the dir and the expected
  (location, reason) of every problem."""
  root = valid_manual_dir
  csv_path = root / "fer2013" / "fer2013.csv"
  with open(csv_path, "a") as file:
    file.write(fer2013_row(3, "Training", num_pixels=2303) + "\n")  # line 8
    file.write(fer2013_row(7, "Training") + "\n")  # line 9
  write_ckplus_sequence(root, "S020", "001", num_frames=3, code=4, with_peak_image=False)
  write_ckplus_sequence(root, "S021", "001", num_frames=3, code=9)
  (root / "jaffe" / "jaffedbase" / "KR.DI1.2.tiff").write_bytes(b"not a tiff")
  write_image(root / "jaffe" / "jaffedbase" / "UY.FE1.3.tiff", NO_FACE)
  write_mmi_session(root, "5", "S004-001", emotion="2", media=None)
  write_image(root / "kdef" / "happy" / "nosubject.png")
  ck = root / "ckplus" / "Emotion"
  expected = [
      (f"{csv_path}:8", "expected 2304 pixel values, found 2303"),
      (f"{csv_path}:9", "unknown emotion code '7'"),
      (f"{ck}/S020/001/S020_001_00000003_emotion.txt:1", "label file without its image"),
      (f"{ck}/S021/001/S021_001_00000003_emotion.txt:1", "unknown emotion code"),
      (f"{root}/jaffe/jaffedbase/KR.DI1.2.tiff", "unreadable image"),
      (f"{root}/jaffe/jaffedbase/UY.FE1.3.tiff", "no face found"),
      (f"{root}/mmi/Sessions/5/S004-001.xml", "label file without its image"),
      (f"{root}/kdef/happy/nosubject.png", "file name is not <subject>_<anything>"),
  ]
  return root, expected

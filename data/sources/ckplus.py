"""CK+ (the Extended Cohn-Kanade dataset) in its distributed layout.

    cohn-kanade-images/S005/001/S005_001_00000001.png ... S005_001_00000011.png
    Emotion/S005/001/S005_001_00000011_emotion.txt      (one number, e.g. "3.0000000e+00")

Each sequence runs from a neutral face to the peak of one expression; only sequences with an
`_emotion.txt` file are labelled, on their last (peak) frame. From a labelled sequence the last
`PEAK_FRAMES` frames up to the labelled one take its label and the first frame is taken as
neutral. Contempt (code 2) is not one of the EmotionSet classes: those peaks are left out,
their neutral first frames kept. Faces still have to be found and cropped.
"""

from __future__ import annotations

import pathlib

from flaxflow.data.sources import records

SOURCE = "ckplus"
IMAGES_DIR = "cohn-kanade-images"
LABELS_DIR = "Emotion"
LABEL_SUFFIX = "_emotion.txt"
PEAK_FRAMES = 3

# Label names by CK+ emotion code; None for contempt, which is not an EmotionSet class.
CODE_TO_LABEL = {
    0: "neutral", 1: "anger", 2: None, 3: "disgust", 4: "fear", 5: "happy", 6: "sad",
    7: "surprise",
}


def read(root: pathlib.Path) -> records.Items:
  """Yields the records of every labelled sequence under `root`, and the problems found."""
  images_root, labels_root = root / IMAGES_DIR, root / LABELS_DIR
  for directory in (images_root, labels_root):
    if not directory.is_dir():
      yield records.Problem(str(directory), "missing; CK+ needs both "
                            f"{IMAGES_DIR}/ and {LABELS_DIR}/ under {root}")
      return
  for label_file in sorted(labels_root.glob(f"*/*/*{LABEL_SUFFIX}")):
    yield from _read_sequence(label_file, images_root)


def _read_sequence(label_file: pathlib.Path, images_root: pathlib.Path) -> records.Items:
  text = label_file.read_text(errors="replace").strip()
  code = _parse_code(text)
  if code not in CODE_TO_LABEL:
    yield records.Problem(str(label_file), f"unknown emotion code {text!r} (expected 0..7)", 1)
    return
  subject, sequence = label_file.parent.parent.name, label_file.parent.name
  sequence_dir = images_root / subject / sequence
  labelled_frame = sequence_dir / (label_file.name[:-len(LABEL_SUFFIX)] + ".png")
  if not labelled_frame.is_file():
    yield records.Problem(str(label_file), f"label file without its image {labelled_frame}", 1)
    return
  frames = [path for path in records.image_files(sequence_dir) if path <= labelled_frame]

  def record(frame: pathlib.Path, label: str) -> records.Record:
    return records.Record(
        key=f"{SOURCE}/{subject}/{sequence}/{frame.stem}", label=label,
        subject=f"{SOURCE}/{subject}", source=SOURCE, path=str(frame))

  yield record(frames[0], "neutral")
  label = CODE_TO_LABEL[code]
  if label is not None:
    for frame in frames[1:][-PEAK_FRAMES:]:
      yield record(frame, label)


def _parse_code(text: str) -> int | None:
  """The integer code written as a float ("3.0000000e+00"), or None if it is not one."""
  try:
    value = float(text)
  except ValueError:
    return None
  return int(value) if value.is_integer() else None

"""The MMI Facial Expression Database, as distributed or in the generic folder layout.

As distributed, every session is a folder with its recording and an XML file of the same
name carrying the session's metadata:

    Sessions/1/S001-001.avi
    Sessions/1/S001-001.xml      (<Metatag Name="Emotion" Value="1"/> among others)
    Sessions/1/session.xml

Emotion values 1..6 are anger, disgust, fear, happy, sad, surprise; sessions with another
value or without an emotion tag (action-unit-only sessions) are not part of the EmotionSet.
The file name starts with the subject (`S001`). A video is an onset-apex-offset sequence, so
its middle `APEX_FRAMES` frames are taken; a still-image session gives its image. Without a
`Sessions/` folder the source is read in the generic layout (`folders.read`).
"""

from __future__ import annotations

import pathlib
import re
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np

from flaxflow.data.sources import folders
from flaxflow.data.sources import records

SOURCE = "mmi"
SESSIONS_DIR = "Sessions"
APEX_FRAMES = 3
CODE_TO_LABEL = {1: "anger", 2: "disgust", 3: "fear", 4: "happy", 5: "sad", 6: "surprise"}
VIDEO_SUFFIXES = (".avi", ".wmv", ".mp4", ".mov", ".mpg")
SUBJECT = re.compile(r"(S\d+)[-_]", re.IGNORECASE)


def read(root: pathlib.Path) -> records.Items:
  """Yields the records under `root` (distributed or generic layout) and the problems found."""
  sessions = root / SESSIONS_DIR
  if not sessions.is_dir():
    yield from folders.read(root, SOURCE)
    return
  for session_dir in sorted(path for path in sessions.iterdir() if path.is_dir()):
    for annotation in sorted(session_dir.glob("*.xml")):
      yield from _read_session(annotation)


def _read_session(annotation: pathlib.Path) -> records.Items:
  try:
    tree = ElementTree.parse(annotation)
  except ElementTree.ParseError as error:
    yield records.Problem(str(annotation), f"unreadable XML ({error.msg})", error.position[0])
    return
  tags = [element.get("Value", "") for element in tree.iter()
          if element.tag.lower() == "metatag" and element.get("Name", "").lower() == "emotion"]
  if not tags:
    return  # not a labelled recording: session.xml, action-unit annotations, ...
  value = tags[0].strip()
  if not value.isdigit():
    yield records.Problem(str(annotation), f"Emotion value {value!r} is not a number")
    return
  label = CODE_TO_LABEL.get(int(value))
  if label is None:
    return  # an expression that is not one of the EmotionSet classes
  media = [path for path in sorted(annotation.parent.iterdir())
           if path.stem == annotation.stem and path.suffix.lower() in
           VIDEO_SUFFIXES + records.IMAGE_SUFFIXES]
  if not media:
    yield records.Problem(str(annotation), "label file without its image or video")
    return
  subject = SUBJECT.match(annotation.stem)
  if subject is None:
    yield records.Problem(str(annotation), "file name does not start with the subject (S<n>-)")
    return
  path = media[0]
  record = dict(label=label, subject=f"{SOURCE}/{subject[1].upper()}", source=SOURCE,
                path=str(path))
  key = f"{SOURCE}/{annotation.parent.name}/{path.name}"
  if path.suffix.lower() not in VIDEO_SUFFIXES:
    yield records.Record(key=key, **record)
    return
  frames = _read_video(path)
  if not frames:
    yield records.Problem(str(path), "cannot read video")
    return
  first = max(0, (len(frames) - APEX_FRAMES) // 2)
  for index in range(first, min(len(frames), first + APEX_FRAMES)):
    yield records.Record(key=f"{key}/{index}", image=frames[index], line=index, **record)


def _read_video(path: pathlib.Path) -> list[np.ndarray]:
  """All frames of a video as grayscale uint8, or [] when it cannot be decoded."""
  capture = cv2.VideoCapture(str(path))
  frames = []
  try:
    while True:
      ok, frame = capture.read()
      if not ok:
        return frames
      frames.append(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
  finally:
    capture.release()

"""JAFFE (the Japanese Female Facial Expression database): one TIFF per posed expression.

File names read `<subject>.<expression><n>.<id>.tiff`, e.g. `KA.AN1.39.tiff`, with the
expression codes AN DI FE HA NE SA SU. The files may sit in any sub-folder of the source
directory. Faces still have to be found and cropped.
"""

from __future__ import annotations

import pathlib
import re

from flaxflow.data.sources import records

SOURCE = "jaffe"
CODE_TO_LABEL = {
    "AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad",
    "SU": "surprise",
}
FILE_NAME = re.compile(r"(?P<subject>[A-Z]+)\.(?P<code>[A-Z]{2})\d*\.\d+\.tiff?", re.IGNORECASE)


def read(root: pathlib.Path) -> records.Items:
  """Yields a record per JAFFE image under `root`, and a problem per unexpected file name."""
  for path in sorted(root.rglob("*")):
    if path.suffix.lower() in (".tif", ".tiff") and not path.name.startswith("."):
      yield _read_file(path, root)


def _read_file(path: pathlib.Path, root: pathlib.Path) -> records.Item:
  match = FILE_NAME.fullmatch(path.name)
  if match is None:
    return records.Problem(str(path), "file name is not <subject>.<expression><n>.<id>.tiff")
  code = match["code"].upper()
  if code not in CODE_TO_LABEL:
    return records.Problem(
        str(path), f"unknown expression code {code!r} (expected one of {' '.join(CODE_TO_LABEL)})")
  subject = match["subject"].upper()
  name = path.relative_to(root).with_suffix("").as_posix()
  return records.Record(
      key=f"{SOURCE}/{name}", label=CODE_TO_LABEL[code], subject=f"{SOURCE}/{subject}",
      source=SOURCE, path=str(path))

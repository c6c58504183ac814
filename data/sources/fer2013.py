"""FER2013 as published for the 2013 Kaggle challenge: one CSV of 48x48 face crops.

`fer2013.csv` has the columns `emotion,pixels,Usage` (in any order; the variant with spaces
after the commas in the header is accepted too). `pixels` holds 2304 space-separated gray
values, row-major; `Usage` names the split: Training, PublicTest or PrivateTest. The faces
are already cropped, and the people are not identified, so `subject` is "".
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from flaxflow.data.sources import records

SOURCE = "fer2013"
FILE_NAME = "fer2013.csv"
SIDE = 48

# Label names by FER2013 emotion code 0..6.
CODE_TO_LABEL = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
COLUMNS = ("emotion", "pixels", "Usage")


def read(root: pathlib.Path) -> records.Items:
  """Yields a `Record` per well-formed row of `root/fer2013.csv` and a `Problem` per bad one."""
  path = root / FILE_NAME
  if not path.is_file():
    yield records.Problem(str(path), f"missing; expected the Kaggle {FILE_NAME} here")
    return
  # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name.
  # A byte that is not UTF-8 becomes a lone surrogate, which `_parse_row` reports with its line.
  with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
    rows = csv.reader(file)
    rows_end = 0  # The last line of the rows read so far: the next row begins after it.
    try:
      header = [name.strip() for name in next(rows, [])]
      missing = [name for name in COLUMNS if name not in header]
      if missing:
        yield records.Problem(str(path), f"header lacks the column(s) {', '.join(missing)}", 1)
        return
      column = {name: header.index(name) for name in COLUMNS}
      rows_end = rows.line_num
      for row in rows:
        if row:
          yield _parse_row(row, column, len(header), str(path), rows.line_num)
        rows_end = rows.line_num
    # E.g. an unterminated quote that swallows the lines after it: the rest cannot be read.
    except csv.Error as error:
      yield records.Problem(str(path), f"not valid CSV from here on ({error})", rows_end + 1)


def _is_utf8(row: list[str]) -> bool:
  try:
    "".join(row).encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def _parse_row(row, column, num_columns, path, line) -> records.Item:
  if not _is_utf8(row):
    return records.Problem(path, "holds bytes that are not UTF-8 text", line)
  if len(row) != num_columns:
    return records.Problem(path, f"expected {num_columns} fields, found {len(row)}", line)
  code = row[column["emotion"]].strip()
  if code not in {str(i) for i in range(len(CODE_TO_LABEL))}:
    return records.Problem(path, f"unknown emotion code {code!r} (expected 0..6)", line)
  usage = row[column["Usage"]].strip()
  if usage not in USAGE_TO_SPLIT:
    return records.Problem(
        path, f"unknown Usage {usage!r} (expected one of {', '.join(USAGE_TO_SPLIT)})", line)
  try:
    pixels = np.array(list(map(int, row[column["pixels"]].split())), dtype=np.int64)
  except ValueError:
    return records.Problem(path, "pixels must be integers", line)
  if pixels.size != SIDE * SIDE:
    return records.Problem(
        path, f"expected {SIDE * SIDE} pixel values, found {pixels.size}", line)
  if pixels.min() < 0 or pixels.max() > 255:
    return records.Problem(path, "pixel values must lie in 0..255", line)
  return records.Record(
      key=f"{SOURCE}/{line}", label=CODE_TO_LABEL[int(code)], subject="", source=SOURCE,
      path=path, line=line, image=pixels.astype(np.uint8).reshape(SIDE, SIDE),
      split=USAGE_TO_SPLIT[usage], is_face_crop=True)

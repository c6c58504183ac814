"""From a manual directory of native datasets to EmotionSet examples, splits and counts.

Each top-level folder of the manual directory is one source: `fer2013`, `ckplus`, `jaffe` and
`mmi` are read in their native layouts (see `data.sources`); any other folder is read in the
generic `<label>/<subject>_*.png` layout and named after the folder. Everything is read and
checked before anything is written, so that bad input is reported all at once.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Callable, Iterable, Optional, Union

import numpy as np

from flaxflow.data import faces
from flaxflow.data.sources import ckplus
from flaxflow.data.sources import fer2013
from flaxflow.data.sources import folders
from flaxflow.data.sources import jaffe
from flaxflow.data.sources import mmi
from flaxflow.data.sources import records

NATIVE_READERS = {
    fer2013.SOURCE: fer2013.read,
    ckplus.SOURCE: ckplus.read,
    jaffe.SOURCE: jaffe.read,
    mmi.SOURCE: mmi.read,
}
SPLITS = ("train", "validation", "test")
# Sources without their own split are split by subject: a seeded shuffle of the subjects,
# then a tenth each (at least one subject) for validation and test.
SUBJECT_SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.1


class BadInputError(ValueError):
  """The manual directory holds input that cannot be used; `problems` lists it."""

  def __init__(self, message: str, problems: list[records.Problem]):
    super().__init__(message)
    self.problems = problems


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
  key: str
  split: str
  image: np.ndarray  # (side, side, 1) uint8
  label: str
  subject: str
  source: str


@dataclasses.dataclass(frozen=True)
class Assembly:
  examples: list[Example]
  problems: list[records.Problem]


def find_sources(manual_dir: pathlib.Path) -> dict[str, Callable[[], records.Items]]:
  """Readers by source name for the folders of `manual_dir`."""
  if not manual_dir.is_dir():
    raise FileNotFoundError(f"manual_dir {manual_dir} is not a directory")
  sources = {}
  for directory in sorted(path for path in manual_dir.iterdir() if path.is_dir()):
    if directory.name.startswith((".", "_")):
      continue
    name = directory.name.lower()
    if name in NATIVE_READERS:
      sources[name] = lambda read=NATIVE_READERS[name], root=directory: read(root)
    else:
      sources[name] = lambda root=directory, source=name: folders.read(root, source)
  if not sources:
    raise FileNotFoundError(
        f"manual_dir {manual_dir} holds no dataset folder; expected any of "
        f"{', '.join(NATIVE_READERS)} (native layouts) or <name>/<label>/<subject>_*.png")
  return sources


def assemble(manual_dir: Union[str, pathlib.Path], side: int) -> Assembly:
  """Reads every source under `manual_dir` into `side` x `side` grayscale examples."""
  items = [item for read in find_sources(pathlib.Path(manual_dir)).values() for item in read()]
  problems = [item for item in items if isinstance(item, records.Problem)]
  found = [item for item in items if isinstance(item, records.Record)]
  # Drawn before any face is looked for, so that a failed detection moves no subject.
  split_of_subject = assign_subject_splits(
      record.subject for record in found if record.split is None)
  examples = []
  for record in found:
    image = face_image(record, side)
    if isinstance(image, records.Problem):
      problems.append(image)
    else:
      examples.append(Example(
          key=record.key, split=record.split or split_of_subject[record.subject],
          image=image[:, :, np.newaxis], label=record.label, subject=record.subject,
          source=record.source))
  return Assembly(examples, problems)


def face_image(record: records.Record, side: int) -> Union[np.ndarray, records.Problem]:
  """The record's face as `side` x `side` uint8, or the problem that prevents it."""
  gray = record.image if record.image is not None else records.read_grayscale(record.path)
  if gray is None:
    return record.problem("unreadable image")
  if record.is_face_crop:
    return faces.resize(gray, side)
  face = faces.crop_face(gray, side)
  return record.problem("no face found") if face is None else face


def assign_subject_splits(subjects: Iterable[str]) -> dict[str, str]:
  """Maps each subject to a split, per source, so that no subject is in two splits."""
  by_source = collections.defaultdict(set)
  for subject in subjects:
    by_source[subject.partition("/")[0]].add(subject)
  split_of = {}
  for source_subjects in by_source.values():
    ordered = sorted(source_subjects)
    order = np.random.RandomState(SUBJECT_SPLIT_SEED).permutation(len(ordered))
    sizes = held_out_sizes(len(ordered))
    bounds = np.cumsum([len(ordered) - sum(sizes), *sizes])
    for position, index in enumerate(order):
      split_of[ordered[index]] = SPLITS[int(np.searchsorted(bounds, position, side="right"))]
  return split_of


def held_out_sizes(num_subjects: int) -> tuple[int, int]:
  """Subjects held out for (validation, test): test as soon as there are 2, validation at 3."""
  tenth = max(1, int(num_subjects * HELD_OUT_FRACTION + 0.5))  # rounded half up
  return (tenth if num_subjects >= 3 else 0), (tenth if num_subjects >= 2 else 0)


def count(examples: Iterable[Example]) -> dict[str, dict[str, dict[str, int]]]:
  """Examples per source, label and split: `counts[source][label][split]`."""
  counts = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
  for example in examples:
    counts[example.source][example.label][example.split] += 1
  return {source: {label: dict(splits) for label, splits in labels.items()}
          for source, labels in sorted(counts.items())}


def count_table(counts: dict[str, dict[str, dict[str, int]]], class_names: Iterable[str],
                title: Optional[str] = None) -> str:
  """A class-by-source table; cells are `train,validation,test` counts, totals all splits."""
  class_names = list(class_names)
  sources = list(counts)

  def per_split(pairs: Iterable[tuple[str, str]]) -> collections.Counter:
    total = collections.Counter()
    for source, label in pairs:
      total.update(counts[source].get(label, {}))
    return total

  def cell(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(str(per_split(pairs)[split]) for split in SPLITS)

  rows = [["label", *sources, "total"]]
  for label in [*class_names, "total"]:
    labels = class_names if label == "total" else [label]
    rows.append([label, *(cell([(source, name) for name in labels]) for source in sources),
                 str(sum(per_split([(s, name) for s in sources for name in labels]).values()))])
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip()
           for row in rows]
  return "\n".join(([title] if title else []) + lines)


def describe_problems(problems: list[records.Problem], limit: int = 50) -> str:
  """One indented line per problem, the first `limit` of them."""
  lines = [f"  {problem}" for problem in problems[:limit]]
  if len(problems) > limit:
    lines.append(f"  ... and {len(problems) - limit} more")
  return "\n".join(lines)

"""The generic layout for any labelled face dataset: `<label>/<subject>_<anything>.<ext>`.

    happy/S001_001_00012.png
    sad/S014_take2.jpg

`<label>` is a class name or a common synonym (angry, happiness, sadness, surprised, ...;
see `records.LABEL_ALIASES`); a `contempt/` folder is left out, as contempt is not one of the
classes. Everything before the first underscore of a file name identifies the person, which
keeps each person in one split. Faces still have to be found and cropped.
"""

from __future__ import annotations

import pathlib

from flaxflow.data.sources import records


def read(root: pathlib.Path, source: str) -> records.Items:
  """Yields a record per image under `root` in the generic layout, naming it `source`."""
  for path in records.image_files(root):
    yield records.Problem(str(path), "image outside a <label>/ folder")
  for label_dir in sorted(path for path in root.iterdir() if path.is_dir()):
    if label_dir.name.startswith("."):
      continue
    name = label_dir.name.lower()
    if name not in records.LABEL_ALIASES:
      yield records.Problem(str(label_dir), "unknown label folder; expected one of "
                            + ", ".join(sorted(records.LABEL_ALIASES)))
    elif records.LABEL_ALIASES[name] is not None:
      for path in records.image_files(label_dir):
        yield _read_file(path, records.LABEL_ALIASES[name], source)
      for path in _images_in_subfolders(label_dir):
        yield records.Problem(str(path), f"image in a subfolder of {label_dir.name}/, which is not "
                              f"read; move it into {label_dir.name}/")


def _images_in_subfolders(directory: pathlib.Path) -> list[pathlib.Path]:
  return [path for subfolder in sorted(directory.iterdir())
          if subfolder.is_dir() and not subfolder.name.startswith(".")
          for path in sorted(subfolder.rglob("*"))
          if path.is_file() and not path.name.startswith(".")
          and path.suffix.lower() in records.IMAGE_SUFFIXES]


def _read_file(path: pathlib.Path, label: str, source: str) -> records.Item:
  subject, underscore, _ = path.stem.partition("_")
  if not (subject and underscore):
    return records.Problem(str(path), "file name is not <subject>_<anything>")
  return records.Record(
      key=f"{source}/{path.parent.name}/{path.name}", label=label,
      subject=f"{source}/{subject}", source=source, path=str(path))

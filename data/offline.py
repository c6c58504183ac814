"""MNIST and CIFAR-10 read from their original archives, without a download.

MNIST: the four IDX files as published, gzip-compressed or not:
    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
CIFAR-10: the "python version": `cifar-10-python.tar.gz`, or the `cifar-10-batches-py/` folder
it unpacks to (`data_batch_1` .. `data_batch_5`, `test_batch`), or that folder itself.

Both readers return every split at once as `{split: (images, labels)}`, images uint8 NHWC and
labels int32, so that the caller also learns the size of every split.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import pickle
import struct
import tarfile
from typing import Union

import numpy as np

Path = Union[str, pathlib.Path]
Splits = dict[str, tuple[np.ndarray, np.ndarray]]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_SIDE = 32
_IDX_UNSIGNED_BYTE = 0x08


def _mnist_path(data_dir: pathlib.Path, name: str) -> pathlib.Path | None:
  for candidate in (data_dir / f"{name}.gz", data_dir / name):
    if candidate.is_file():
      return candidate
  return None


def has_mnist(data_dir: Path) -> bool:
  """Whether `data_dir` holds any of the MNIST IDX files."""
  return any(_mnist_path(pathlib.Path(data_dir), name)
             for names in MNIST_FILES.values() for name in names)


def read_mnist(data_dir: Path) -> Splits:
  """Both MNIST splits from the IDX files in `data_dir`; images (N, 28, 28, 1)."""
  data_dir = pathlib.Path(data_dir)
  missing = [f"{name}.gz" for names in MNIST_FILES.values() for name in names
             if _mnist_path(data_dir, name) is None]
  if missing:
    raise FileNotFoundError(f"data_dir {data_dir} lacks the MNIST file(s) {', '.join(missing)}")
  splits = {}
  for split, (images_name, labels_name) in MNIST_FILES.items():
    images_path, labels_path = (_mnist_path(data_dir, name) for name in (images_name,
                                                                          labels_name))
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
      raise ValueError(f"{images_path} and {labels_path} must hold (N, rows, columns) images "
                       f"and (N,) labels, not {images.shape} and {labels.shape}")
    if len(images) != len(labels):
      raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} "
                       f"{len(labels)} labels")
    _check_labels(labels, 10, labels_path)
    splits[split] = images[..., np.newaxis], labels.astype(np.int32)
  return splits


def read_idx(path: Path) -> np.ndarray:
  """The unsigned-byte array stored in an IDX file (gzip-compressed if it ends in .gz)."""
  path = pathlib.Path(path)
  try:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
      content = file.read()
  except (OSError, EOFError) as error:
    raise ValueError(f"{path}: cannot read ({error})") from error
  if len(content) < 4 or content[:2] != b"\0\0" or content[2] != _IDX_UNSIGNED_BYTE:
    raise ValueError(f"{path}: not an IDX file of unsigned bytes")
  rank = content[3]
  header_size = 4 + 4 * rank
  if len(content) < header_size:
    raise ValueError(f"{path}: IDX header cut short")
  shape = struct.unpack(f">{rank}I", content[4:header_size])
  body = content[header_size:]
  if len(body) != int(np.prod(shape)):
    raise ValueError(f"{path}: header promises shape {shape} = {int(np.prod(shape))} bytes, "
                     f"the file holds {len(body)}")
  return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def has_cifar10(data_dir: Path) -> bool:
  """Whether `data_dir` holds the CIFAR-10 python archive, its folder, or its batches."""
  data_dir = pathlib.Path(data_dir)
  return ((data_dir / CIFAR10_ARCHIVE).is_file() or (data_dir / CIFAR10_FOLDER).is_dir()
          or any((data_dir / name).is_file() for names in CIFAR10_BATCHES.values()
                 for name in names))


def read_cifar10(data_dir: Path) -> Splits:
  """Both CIFAR-10 splits from the python archive or folder in `data_dir`; images (N, 32, 32, 3)."""
  content, origin = _cifar10_batch_bytes(pathlib.Path(data_dir))
  splits = {}
  for split, names in CIFAR10_BATCHES.items():
    parts = [_decode_cifar10_batch(content[name], f"{origin}/{name}") for name in names]
    splits[split] = (np.concatenate([images for images, _ in parts]),
                     np.concatenate([labels for _, labels in parts]))
  return splits


def _cifar10_batch_bytes(data_dir: pathlib.Path) -> tuple[dict[str, bytes], str]:
  """The content of every batch file by name, and where they were found."""
  names = [name for split_names in CIFAR10_BATCHES.values() for name in split_names]
  folder = data_dir / CIFAR10_FOLDER if (data_dir / CIFAR10_FOLDER).is_dir() else data_dir
  if any((folder / name).is_file() for name in names):
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
      raise FileNotFoundError(f"data_dir {folder} lacks the CIFAR-10 batch(es) "
                              f"{', '.join(missing)}")
    return {name: (folder / name).read_bytes() for name in names}, str(folder)
  archive = data_dir / CIFAR10_ARCHIVE
  if not archive.is_file():
    raise FileNotFoundError(f"data_dir {data_dir} holds neither {CIFAR10_ARCHIVE} nor the "
                            f"{CIFAR10_FOLDER}/ batches")
  content = {}
  try:
    with tarfile.open(archive, "r:gz") as tar:
      for member in tar:
        name = pathlib.PurePosixPath(member.name).name
        if member.isfile() and name in names:
          content[name] = tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as error:
    raise ValueError(f"{archive}: cannot read ({error})") from error
  missing = [name for name in names if name not in content]
  if missing:
    raise FileNotFoundError(f"{archive} lacks the CIFAR-10 batch(es) {', '.join(missing)}")
  return content, str(archive)


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles plain containers and numpy arrays only: a batch file can run no other code."""

  ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
      ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
  }

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
    return super().find_class(module, name)


def _decode_cifar10_batch(content: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    batch = _ArrayUnpickler(io.BytesIO(content), encoding="bytes").load()
    data, labels = (batch.get(key.encode(), batch.get(key)) for key in ("data", "labels"))
  except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as error:
    raise ValueError(f"{where}: not a CIFAR-10 python batch ({error})") from error
  data, labels = np.asarray(data), np.asarray(labels)
  pixels = CIFAR10_SIDE * CIFAR10_SIDE * 3
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
    raise ValueError(f"{where}: data must be uint8 (N, {pixels}), not {data.dtype} {data.shape}")
  if labels.shape != (len(data),):
    raise ValueError(f"{where}: {len(data)} images but labels of shape {labels.shape}")
  _check_labels(labels, 10, where)
  images = data.reshape(-1, 3, CIFAR10_SIDE, CIFAR10_SIDE).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _check_labels(labels: np.ndarray, num_classes: int, where) -> None:
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1}")

"""Writers of tiny datasets in the native layouts of FER2013, CK+, JAFFE, MMI, MNIST, CIFAR-10.

Faces come from scikit-image's `astronaut()` photo (one frontal face the Haar cascade finds);
`camera()` has no face.
"""

import gzip
import io
import pathlib
import pickle
import struct
import tarfile
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np
import skimage.data

from flaxflow.data import offline

PHOTO_SIDE = 200  # small for speed; the astronaut's face is then about 36 pixels wide


def _photo(image: np.ndarray) -> np.ndarray:
  gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
  return cv2.resize(gray, (PHOTO_SIDE, PHOTO_SIDE), interpolation=cv2.INTER_AREA)


FACE = _photo(skimage.data.astronaut())
NO_FACE = _photo(skimage.data.camera())


def write_image(path: pathlib.Path, image: np.ndarray = FACE) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(path), image):
    raise OSError(f"cannot write {path}")
  return path


def fer2013_row(code: int, usage: str, value: int = 7, num_pixels: int = 48 * 48) -> str:
  return f"{code},{' '.join([str(value)] * num_pixels)},{usage}"


def write_fer2013(root: pathlib.Path, rows: list[str]) -> pathlib.Path:
  path = root / "fer2013" / "fer2013.csv"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
  return path


def write_ckplus_sequence(root: pathlib.Path, subject: str, sequence: str, num_frames: int,
                          code: float, with_peak_image: bool = True) -> list[pathlib.Path]:
  """Frames 1..num_frames and a label file on the last one; returns the frame paths."""
  frames = []
  for index in range(1, num_frames + 1):
    path = root / "ckplus" / "cohn-kanade-images" / subject / sequence / (
        f"{subject}_{sequence}_{index:08d}.png")
    if index < num_frames or with_peak_image:
      frames.append(write_image(path))
  label_file = root / "ckplus" / "Emotion" / subject / sequence / (
      f"{subject}_{sequence}_{num_frames:08d}_emotion.txt")
  label_file.parent.mkdir(parents=True, exist_ok=True)
  label_file.write_text(f"   {code:.7e}\n")
  return frames


def write_mmi_session(root: pathlib.Path, session: str, stem: str, emotion: str | None,
                      media: str | None = ".avi", num_frames: int = 7) -> pathlib.Path:
  """A session folder with its annotation XML and a video or image; returns the XML path."""
  folder = root / "mmi" / "Sessions" / session
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "session.xml").write_text(
      f'<?xml version="1.0"?>\n<session sessionId="{session}"><subject id="{stem[1:4]}"/>'
      "</session>\n")
  annotation = ElementTree.Element("Metatags")
  ElementTree.SubElement(annotation, "Metatag", Name="Gender", Value="1")
  if emotion is not None:
    ElementTree.SubElement(annotation, "Metatag", Name="Emotion", Value=emotion)
  xml_path = folder / f"{stem}.xml"
  ElementTree.ElementTree(annotation).write(xml_path)
  if media == ".avi":
    color = cv2.cvtColor(FACE, cv2.COLOR_GRAY2BGR)
    writer = cv2.VideoWriter(str(folder / f"{stem}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                             (PHOTO_SIDE, PHOTO_SIDE))
    for _ in range(num_frames):
      writer.write(color)
    writer.release()
  elif media is not None:
    write_image(folder / f"{stem}{media}")
  return xml_path


# (source, label, subject) -> count, for the `valid_manual_dir` fixture.
EXPECTED_VALID = {
    ("fer2013", "anger", ""): 1, ("fer2013", "happy", ""): 1, ("fer2013", "neutral", ""): 1,
    ("fer2013", "disgust", ""): 1, ("fer2013", "sad", ""): 1, ("fer2013", "surprise", ""): 1,
    ("ckplus", "neutral", "ckplus/S005"): 1, ("ckplus", "disgust", "ckplus/S005"): 3,
    ("ckplus", "neutral", "ckplus/S010"): 1,
    ("ckplus", "neutral", "ckplus/S011"): 1, ("ckplus", "happy", "ckplus/S011"): 1,
    ("jaffe", "anger", "jaffe/KA"): 1, ("jaffe", "happy", "jaffe/KA"): 1,
    ("jaffe", "surprise", "jaffe/KM"): 1, ("jaffe", "neutral", "jaffe/NA"): 1,
    ("mmi", "anger", "mmi/S001"): 3, ("mmi", "happy", "mmi/S002"): 1,
    ("kdef", "happy", "kdef/AF01"): 1, ("kdef", "sad", "kdef/AM02"): 1,
}
EXPECTED_FER2013_SPLITS = {"anger": "train", "happy": "train", "neutral": "train",
                           "disgust": "validation", "sad": "test", "surprise": "test"}


MNIST_SIZES = {"train": 5, "test": 3}
CIFAR10_BATCH_SIZE = 4


def idx_bytes(array: np.ndarray) -> bytes:
  return (b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
          + array.astype(np.uint8).tobytes())


def mnist_arrays():
  rng = np.random.RandomState(0)
  return {split: (rng.randint(0, 256, (size, 28, 28)), rng.randint(0, 10, size))
          for split, size in MNIST_SIZES.items()}


def write_mnist(directory, compress=True):
  arrays = mnist_arrays()
  directory.mkdir(parents=True, exist_ok=True)
  for split, (images_name, labels_name) in offline.MNIST_FILES.items():
    for name, array in ((images_name, arrays[split][0]), (labels_name, arrays[split][1])):
      content = idx_bytes(array)
      if compress:
        (directory / f"{name}.gz").write_bytes(gzip.compress(content))
      else:
        (directory / name).write_bytes(content)
  return arrays


def cifar10_batches():
  """Batch name -> (data (N, 3072) with planes R, G, B, labels), as in the python version."""
  rng = np.random.RandomState(1)
  names = offline.CIFAR10_BATCHES["train"] + offline.CIFAR10_BATCHES["test"]
  return {name: (rng.randint(0, 256, (CIFAR10_BATCH_SIZE, 3072)).astype(np.uint8),
                 rng.randint(0, 10, CIFAR10_BATCH_SIZE).tolist()) for name in names}


def batch_pickle(data, labels) -> bytes:
  batch = {b"batch_label": b"batch", b"labels": labels, b"data": data,
           b"filenames": [b"x.png"] * len(labels)}
  return pickle.dumps(batch, protocol=2)


def write_cifar10_folder(directory):
  batches = cifar10_batches()
  directory.mkdir(parents=True, exist_ok=True)
  for name, (data, labels) in batches.items():
    (directory / name).write_bytes(batch_pickle(data, labels))
  (directory / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}, protocol=2))
  return batches


def write_cifar10_archive(directory):
  batches = cifar10_batches()
  directory.mkdir(parents=True, exist_ok=True)
  with tarfile.open(directory / offline.CIFAR10_ARCHIVE, "w:gz") as tar:
    for name, (data, labels) in batches.items():
      content = batch_pickle(data, labels)
      info = tarfile.TarInfo(f"{offline.CIFAR10_FOLDER}/{name}")
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))
  return batches


def expected_cifar10(batches, split):
  names = offline.CIFAR10_BATCHES[split]
  data = np.concatenate([batches[name][0] for name in names])
  labels = np.concatenate([batches[name][1] for name in names])
  return data, labels

"""Every dataset through one function, `load`, with one element format.

    dataset, info = load("emotion_set/64", "train", data_dir="~/tensorflow_datasets")

Elements are `{"image": uint8 (H, W, C), "label": int32, "subject": string}`; `subject`
identifies the person where the dataset does (EmotionSet's lab sources) and is "" otherwise.
Names:

* `digits`: scikit-learn's bundled 8x8 digits (values 0..16 scaled to 0..255), split 80/20 by
  a fixed seeded, class-stratified draw; needs no files (`data_dir` is not used).
* `mnist`, `cifar10`: read offline from the original archives when `data_dir` holds them (see
  `data.offline`), otherwise through `tfds.load` (downloading unless `download=False`).
* `emotion_set`, `emotion_set/48`, `emotion_set/64` (the default): the built EmotionSet (see
  `data.emotion_set`); it is never built implicitly.
* `synthetic_faces`, `synthetic_faces/32`, `synthetic_faces/48` (the default),
  `synthetic_faces/64`: rendered faces in EmotionSet's classes (see `data.synthetic_faces`),
  built into `data_dir` on first use (about 20 seconds). Its elements also carry each
  image's ground-truth factors: `identity` float32 (len(IDENTITY_FIELDS),), `intensity`
  float32, `nuisance` float32 (len(NUISANCE_FIELDS),) and `index` int32 (the row of
  `data.synthetic_faces.builder.split_factors`); `label` is the expression class.
* `face_folders/<size>` (e.g. `face_folders/64`): RGB face crops in `data_dir` laid out as
  `<label>/<subject>_<anything>.<ext>`, resized to size x size, classes those present (BU-EEG's
  six: no neutral class), test split a seeded 20% of the subjects (`data.sources.face_folders`;
  options `test_fraction`, `seed`). Read and decoded on every load.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional

import numpy as np
import requests
import sklearn.datasets
import sklearn.model_selection
import tensorflow_datasets as tfds

from flaxflow.data import offline
from flaxflow.data.emotion_set import builder as emotion_set_builder
from flaxflow.data.sources import face_folders
from flaxflow.data.synthetic_faces import builder as synthetic_faces_builder
from flaxflow.data.tf_cpu import tf

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16
# Where TFDS downloads MNIST and CIFAR-10 from. Without a network TFDS retries for minutes before
# it fails, so the host is tried once first, for at most this long.
MNIST_DOWNLOAD_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
CIFAR10_DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
NETWORK_TIMEOUT_S = 10


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  num_examples: dict[str, int]  # per split


Loaded = tuple[tf.data.Dataset, DatasetInfo]


class DownloadError(OSError):
  """Fetching a dataset through TFDS failed (e.g. no network)."""


def load(name: str, split: str, data_dir: Optional[str] = None, **options) -> Loaded:
  """The `split` of dataset `name` as a tf.data.Dataset in the common format, and its info.

  Args:
    name: "digits", "mnist", "cifar10", "emotion_set" with an optional "/48" or "/64",
      "synthetic_faces" with an optional "/32", "/48" or "/64", or "face_folders/<size>".
    split: "train", "test", or "validation" where the dataset has one.
    data_dir: where the dataset or its archives are; see the module docstring.
    **options: `download` (bool, default True), for every dataset: whether loading may use the
      network (only mnist and cifar10 ever do, through TFDS; with False a missing archive is
      named at once); `seed`, `subjects` ({split: people}), `images_per_subject` and
      `min_intensity` for synthetic_faces (defaults: 0, 120/20/20, 64, 0; see
      `data.synthetic_faces.builder.make_config`); `test_fraction` and `seed` for face_folders
      (defaults 0.2, 0); no other.
  """
  dataset, _, config = name.partition("/")
  data_dir = None if data_dir is None else os.path.expanduser(data_dir)
  if dataset not in _LOADERS:
    raise ValueError(f"name: unknown dataset {name!r}; expected one of digits, mnist, "
                     "cifar10, emotion_set, emotion_set/48, emotion_set/64, synthetic_faces, "
                     "synthetic_faces/32, synthetic_faces/48, synthetic_faces/64, "
                     "face_folders/<size>")
  if config and dataset not in ("emotion_set", "synthetic_faces", "face_folders"):
    raise ValueError(f"name: {dataset} has no configurations, got {name!r}")
  loader, allowed = _LOADERS[dataset]
  allowed = ("download", *allowed)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise TypeError(f"load({name!r}): unknown option(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(allowed) or 'none'}")
  return loader(name=name, config=config, split=split, data_dir=data_dir, **options)


def digits_splits() -> offline.Splits:
  """scikit-learn's digits as uint8 images (N, 8, 8, 1), split by a fixed stratified draw."""
  digits = sklearn.datasets.load_digits()
  images = np.round(digits.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)[..., np.newaxis]
  labels = digits.target.astype(np.int32)
  train, test = sklearn.model_selection.train_test_split(
      np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
      stratify=labels)
  return {split: (images[np.sort(indices)], labels[np.sort(indices)])
          for split, indices in (("train", train), ("test", test))}


def _load_digits(*, name, split, **_) -> Loaded:
  return _from_arrays(name, DIGIT_CLASSES, digits_splits(), split)


def unreachable(url: str) -> Optional[str]:
  """Why `url`'s host cannot be reached (no network, no name resolution, a refused connection,
  a timeout), or None if it answers at all (an HTTP error is an answer)."""
  try:
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                           timeout=NETWORK_TIMEOUT_S).close()
  except urllib.error.HTTPError:
    return None
  except (urllib.error.URLError, OSError) as error:
    return str(getattr(error, "reason", error))
  return None


def _archive_or_tfds(has_archive: Callable, read_archive: Callable, class_names,
                     download_url: str):
  """A loader reading the original archives in `data_dir` if there, else through TFDS, which
  downloads from `download_url` when it has not prepared the dataset (and `download` allows)."""

  def load_dataset(*, name, split, data_dir, download=True, **_) -> Loaded:
    if not isinstance(download, bool):
      raise TypeError(f"download must be True or False, not {download!r}")
    _check_split(name, split, ("train", "test"))
    if data_dir is not None and has_archive(data_dir):
      return _from_arrays(name, class_names, read_archive(data_dir), split)
    if not tfds.builder(name, data_dir=data_dir).is_prepared():
      if data_dir is not None and not download:
        read_archive(data_dir)  # Offline with nothing to read: its error names the missing files.
      reason = unreachable(download_url) if download else None
      if reason is not None:
        raise DownloadError(_no_network_message(name, download_url, reason, data_dir,
                                                read_archive))
    try:
      dataset, info = tfds.load(name, split=split, data_dir=data_dir, download=download,
                                with_info=True, shuffle_files=False)
    except requests.exceptions.RequestException as error:
      raise DownloadError(
          f"{name}: downloading through TFDS failed ({type(error).__name__}); without a network, "
          "put the original archives in data_dir and load with download=False "
          "(--config.download=False)") from error
    return _standardize(dataset), _info_from_tfds(name, info, class_names)

  return load_dataset


def _no_network_message(name: str, url: str, reason: str, data_dir: Optional[str],
                        read_archive: Callable) -> str:
  """That TFDS cannot download `name`, and which archive files to put where instead (the
  archive reader's error on the folder names them)."""
  folder = data_dir or os.path.expanduser(tfds.core.constants.DATA_DIR)
  try:
    read_archive(folder)
    where = f"data_dir {folder} holds its archives"
  except FileNotFoundError as error:
    where = f"{error}: put them there"
  return (f"{name}: {urllib.parse.urlparse(url).hostname} is unreachable ({reason}), so TFDS "
          f"cannot download it; {where} and rerun with --config.download=False"
          + ("" if data_dir else f" --config.data_dir={folder}"))


def _load_emotion_set(*, name, config, split, data_dir, **_) -> Loaded:
  configs = [built.name for built in emotion_set_builder.EmotionSet.BUILDER_CONFIGS]
  if config and config not in configs:
    raise ValueError(f"name: emotion_set has the configurations {', '.join(configs)}, "
                     f"got {name!r}")
  builder = emotion_set_builder.EmotionSet(config=config or None, data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"{name} is not built in data_dir {builder.data_dir}; build it with "
        f"python -m flaxflow.data.emotion_set --manual_dir DIR --data_dir "
        f"{pathlib.Path(builder.data_dir).parents[2]}")
  _check_split(name, split, tuple(builder.info.splits))
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  return _standardize(dataset), _info_from_tfds(name, builder.info)


def _load_synthetic_faces(*, name, config, split, data_dir, download=True, **options) -> Loaded:
  del download  # Rendered locally.
  sizes = [str(size) for size in synthetic_faces_builder.IMAGE_SIZES]
  if config and config not in sizes:
    raise ValueError(f"name: synthetic_faces has the configurations {', '.join(sizes)}, "
                     f"got {name!r}")
  _check_split(name, split, synthetic_faces_builder.SPLITS)
  builder = synthetic_faces_builder.make_builder(
      data_dir, int(config or synthetic_faces_builder.DEFAULT_IMAGE_SIZE), **options)
  if not builder.is_prepared():
    builder.download_and_prepare()
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  return (_standardize(dataset, synthetic_faces_builder.FACTOR_FEATURES),
          _info_from_tfds(name, builder.info))


def _load_face_folders(*, name, config, split, data_dir, download=True, **options) -> Loaded:
  del download  # Local files only.
  if not config or not config.isdigit() or int(config) < 1:
    raise ValueError(f"name: {name!r}: expected face_folders/<image size>, e.g. face_folders/64")
  if data_dir is None:
    raise ValueError(f"{name} reads its images from data_dir: pass --config.data_dir")
  _check_split(name, split, face_folders.SPLITS)
  splits, class_names = face_folders.read_splits(data_dir, int(config), **options)
  examples = splits[split]
  info = DatasetInfo(name=name, class_names=class_names,
                     image_shape=tuple(examples["image"].shape[1:]),
                     num_examples={name: len(part["label"]) for name, part in splits.items()})
  return _standardize(tf.data.Dataset.from_tensor_slices(examples)), info


def _from_arrays(name: str, class_names, splits: offline.Splits, split: str) -> Loaded:
  _check_split(name, split, tuple(splits))
  images, labels = splits[split]
  dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
  info = DatasetInfo(name=name, class_names=tuple(class_names), image_shape=images.shape[1:],
                     num_examples={s: len(split_labels) for s, (_, split_labels) in splits.items()})
  return _standardize(dataset), info


def _standardize(dataset: tf.data.Dataset, extra_features=()) -> tf.data.Dataset:
  """Elements as {"image", "label" int32, "subject"}, plus `extra_features` kept as they are."""

  def standard(example):
    return {"image": example["image"], "label": tf.cast(example["label"], tf.int32),
            "subject": example["subject"] if "subject" in example else tf.constant(""),
            **{feature: example[feature] for feature in extra_features}}

  return dataset.map(standard, num_parallel_calls=tf.data.AUTOTUNE)


def _info_from_tfds(name: str, info: tfds.core.DatasetInfo, class_names=None) -> DatasetInfo:
  return DatasetInfo(
      name=name, class_names=tuple(class_names or info.features["label"].names),
      image_shape=tuple(info.features["image"].shape),
      num_examples={split: info.splits[split].num_examples for split in info.splits})


def _check_split(name: str, split: str, splits: tuple[str, ...]) -> None:
  if split not in splits:
    raise ValueError(f"split: {name} has no split {split!r}; expected one of "
                     f"{', '.join(splits)}")


_LOADERS = {
    "digits": (_load_digits, ()),
    "mnist": (_archive_or_tfds(offline.has_mnist, offline.read_mnist, DIGIT_CLASSES,
                               MNIST_DOWNLOAD_URL), ()),
    "cifar10": (_archive_or_tfds(offline.has_cifar10, offline.read_cifar10, CIFAR10_CLASSES,
                                 CIFAR10_DOWNLOAD_URL), ()),
    "emotion_set": (_load_emotion_set, ()),
    "synthetic_faces": (_load_synthetic_faces, ("seed", "subjects", "images_per_subject",
                                                 "min_intensity")),
    "face_folders": (_load_face_folders, ("test_fraction", "seed")),
}

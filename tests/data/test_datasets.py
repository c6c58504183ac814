"""`load`: one element format for digits, mnist, cifar10 and emotion_set, and clear errors."""

import collections
import re
import socket

import numpy as np
import pytest
import requests
import sklearn.datasets
import tensorflow as tf
import tensorflow_datasets as tfds
from native_formats import MNIST_SIZES, mnist_arrays, write_cifar10_archive, write_mnist

from flaxflow.data import datasets
from flaxflow.data.emotion_set import build


def check_format(dataset, image_shape):
  spec = dataset.element_spec
  assert set(spec) == {"image", "label", "subject"}
  assert spec["image"].dtype == tf.uint8 and tuple(spec["image"].shape) == image_shape
  assert spec["label"].dtype == tf.int32 and spec["label"].shape.rank == 0
  assert spec["subject"].dtype == tf.string and spec["subject"].shape.rank == 0
  return list(dataset.as_numpy_iterator())


class TestDigits:

  def test_format_sizes_and_stratified_split(self):
    train, info = datasets.load("digits", "train")
    test, _ = datasets.load("digits", "test")
    assert info == datasets.DatasetInfo("digits", tuple("0123456789"), (8, 8, 1),
                                        {"train": 1437, "test": 360})
    train_examples = check_format(train, (8, 8, 1))
    test_examples = check_format(test, (8, 8, 1))
    assert (len(train_examples), len(test_examples)) == (1437, 360)
    assert {ex["subject"] for ex in train_examples + test_examples} == {b""}
    target = sklearn.datasets.load_digits().target
    assert collections.Counter(ex["label"] for ex in train_examples + test_examples) == (
        collections.Counter(target.tolist()))
    per_class = collections.Counter(ex["label"] for ex in test_examples)
    assert min(per_class.values()) >= 35 and max(per_class.values()) <= 37

  def test_pixels_are_scaled_with_rounding(self):
    digits = sklearn.datasets.load_digits()
    images = np.stack([ex["image"] for split in ("train", "test")
                       for ex in datasets.load("digits", split)[0].as_numpy_iterator()])
    allowed = {int(np.floor(value * 255 / 16 + 0.5)) for value in range(17)}
    assert set(np.unique(images)) <= allowed and images.max() == 255
    scaled = np.round(digits.images * 255 / 16).astype(np.uint8)
    as_bytes = collections.Counter(image.tobytes() for image in scaled)
    assert collections.Counter(image[..., 0].tobytes() for image in images) == as_bytes

  def test_the_split_is_fixed(self):
    first = [ex["label"] for ex in datasets.load("digits", "test")[0].as_numpy_iterator()]
    again = [ex["label"] for ex in datasets.load("digits", "test")[0].as_numpy_iterator()]
    assert first == again


class TestArchives:

  def test_mnist_from_idx_files(self, tmp_path):
    arrays = write_mnist(tmp_path)
    dataset, info = datasets.load("mnist", "test", data_dir=str(tmp_path))
    assert info == datasets.DatasetInfo("mnist", tuple("0123456789"), (28, 28, 1),
                                        dict(MNIST_SIZES))
    examples = check_format(dataset, (28, 28, 1))
    np.testing.assert_array_equal(np.stack([ex["image"][..., 0] for ex in examples]),
                                  arrays["test"][0])
    assert [ex["label"] for ex in examples] == arrays["test"][1].tolist()

  def test_cifar10_from_the_python_archive(self, tmp_path):
    write_cifar10_archive(tmp_path)
    dataset, info = datasets.load("cifar10", "train", data_dir=str(tmp_path))
    assert info.class_names[0] == "airplane" and info.image_shape == (32, 32, 3)
    assert info.num_examples == {"train": 20, "test": 4}
    assert len(check_format(dataset, (32, 32, 3))) == 20

  @pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
  def test_without_archives_tfds_is_used(self, tmp_path, monkeypatch, name, shape):
    monkeypatch.setattr(datasets, "unreachable", lambda url: None)  # As if online.
    with tfds.testing.mock_data(num_examples=4):
      dataset, info = datasets.load(name, "train", data_dir=str(tmp_path))
    examples = check_format(dataset, shape)
    assert len(examples) == 4 and {ex["subject"] for ex in examples} == {b""}
    assert info.name == name and info.image_shape == shape and len(info.class_names) == 10

  def test_tfds_is_asked_not_to_download_when_told(self, monkeypatch):
    calls = []
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: calls.append(kwargs) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
      datasets.load("mnist", "test", data_dir=None, download=False)
    assert calls[0]["download"] is False and calls[0]["data_dir"] is None

  def test_a_failed_download_is_one_error_that_says_what_to_do(self, monkeypatch):
    def no_network(*args, **kwargs):
      raise requests.exceptions.ConnectionError("Max retries exceeded with url: /mnist/t10k")
    monkeypatch.setattr(datasets, "unreachable", lambda url: None)  # Reachable, then lost.
    monkeypatch.setattr(tfds, "load", no_network)
    with pytest.raises(datasets.DownloadError, match="mnist: downloading through TFDS failed "
                       r"\(ConnectionError\); without a network, put the original archives in "
                       "data_dir and load with download=False"):
      datasets.load("mnist", "test")

  @pytest.mark.parametrize("name, missing", [
      ("mnist", "lacks the MNIST file(s) train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"),
      ("cifar10", "holds neither cifar-10-python.tar.gz")])
  def test_without_a_network_the_missing_files_are_named_before_tfds_tries(
      self, tmp_path, monkeypatch, name, missing):
    with socket.socket() as probe:  # A port nothing listens on: every connection is refused.
      probe.bind(("127.0.0.1", 0))
      closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
      monkeypatch.setenv(variable, closed)
    for variable in ("no_proxy", "NO_PROXY"):
      monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: 1 / 0)  # It would retry for minutes.
    with pytest.raises(datasets.DownloadError, match=re.escape(
        f"{name}: ") + ".* is unreachable .*, so TFDS cannot download it; data_dir .*"
        + re.escape(missing) + ".*: put them there and rerun with --config.download=False$"):
      datasets.load(name, "test", data_dir=str(tmp_path / "empty"), download=True)

  @pytest.mark.parametrize("name, missing", [
      ("mnist", "lacks the MNIST file(s) train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"),
      ("cifar10", "holds neither cifar-10-python.tar.gz")])
  def test_offline_without_files_names_them_and_never_asks_tfds(self, tmp_path, monkeypatch, name,
                                                                missing):
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
      datasets.load(name, "test", data_dir=str(tmp_path / "wrong"), download=False)


class TestEmotionSet:

  def test_loads_a_built_dataset(self, valid_manual_dir, tmp_path):
    build(str(valid_manual_dir), str(tmp_path), ["48"])
    dataset, info = datasets.load("emotion_set/48", "validation", data_dir=str(tmp_path))
    assert info.class_names == ("anger", "disgust", "fear", "happy", "neutral", "sad",
                                "surprise")
    assert info.image_shape == (48, 48, 1)
    assert info.num_examples == {"train": 8, "validation": 3, "test": 12}
    examples = check_format(dataset, (48, 48, 1))
    assert len(examples) == 3 and b"jaffe/KM" in {ex["subject"] for ex in examples}

  def test_not_built_names_the_build_command(self, tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
      datasets.load("emotion_set", "train", data_dir=str(tmp_path))
    assert str(raised.value) == (
        f"emotion_set is not built in data_dir {tmp_path}/emotion_set/64/1.0.0; build it with "
        f"python -m flaxflow.data.emotion_set --manual_dir DIR --data_dir {tmp_path}")


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(name="imagenet", split="train"), ValueError, "name: unknown dataset 'imagenet'"),
    (dict(name="mnist/32", split="train"), ValueError, "name: mnist has no configurations"),
    (dict(name="emotion_set/32", split="train"), ValueError,
     "name: emotion_set has the configurations 48, 64"),
    (dict(name="digits", split="validation"), ValueError,
     "split: digits has no split 'validation'; expected one of train, test"),
    (dict(name="cifar10", split="valid"), ValueError, "split: cifar10 has no split 'valid'"),
    (dict(name="digits", split="train", shuffle=True), TypeError,
     "load.'digits'.: unknown option.s. shuffle; allowed: download"),
    (dict(name="mnist", split="train", download="no"), TypeError,
     "download must be True or False"),
])
def test_bad_arguments_are_named(kwargs, error, message):
  with pytest.raises(error, match=message):
    datasets.load(**kwargs)


def test_mnist_sizes_follow_the_archives(tmp_path):
  write_mnist(tmp_path, compress=False)
  assert datasets.load("mnist", "train", data_dir=str(tmp_path))[1].num_examples == (
      {split: len(labels) for split, (_, labels) in mnist_arrays().items()})

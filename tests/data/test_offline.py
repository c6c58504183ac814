"""MNIST and CIFAR-10 read from archives written here in their original formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from native_formats import (CIFAR10_BATCH_SIZE, batch_pickle, expected_cifar10, idx_bytes,
                            write_cifar10_archive, write_cifar10_folder, write_mnist)

from flaxflow.data import offline

class TestMnist:

  @pytest.mark.parametrize("compress", [True, False])
  def test_reads_both_splits(self, tmp_path, compress):
    arrays = write_mnist(tmp_path, compress)
    assert offline.has_mnist(tmp_path)
    splits = offline.read_mnist(tmp_path)
    for split, (images, labels) in arrays.items():
      np.testing.assert_array_equal(splits[split][0], images[..., np.newaxis])
      np.testing.assert_array_equal(splits[split][1], labels)
      assert splits[split][0].dtype == np.uint8 and splits[split][1].dtype == np.int32

  def test_missing_and_damaged_files_are_named(self, tmp_path):
    assert not offline.has_mnist(tmp_path)
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks the MNIST file.s. t10k-labels-idx1"):
      offline.read_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(4))[:-1]))
    with pytest.raises(ValueError, match=f"{path}: header promises shape .4,. = 4 bytes"):
      offline.read_mnist(tmp_path)
    path.write_bytes(gzip.compress(b"\0\0\x0d\x01" + struct.pack(">I", 3) + bytes(12)))
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
      offline.read_mnist(tmp_path)
    path.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=f"{path}: cannot read"):
      offline.read_mnist(tmp_path)

  def test_images_and_labels_must_agree(self, tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(2))))
    with pytest.raises(ValueError, match="holds 3 images but .* 2 labels"):
      offline.read_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(3, 10))))
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
      offline.read_mnist(tmp_path)


class TestCifar10:

  @pytest.mark.parametrize("layout", ["archive", "folder", "folder itself"])
  def test_reads_both_splits_in_every_layout(self, tmp_path, layout):
    if layout == "archive":
      batches = write_cifar10_archive(tmp_path)
      data_dir = tmp_path
    elif layout == "folder":
      batches = write_cifar10_folder(tmp_path / offline.CIFAR10_FOLDER)
      data_dir = tmp_path
    else:
      batches = write_cifar10_folder(tmp_path / offline.CIFAR10_FOLDER)
      data_dir = tmp_path / offline.CIFAR10_FOLDER
    assert offline.has_cifar10(data_dir)
    splits = offline.read_cifar10(data_dir)
    for split in ("train", "test"):
      data, labels = expected_cifar10(batches, split)
      images, read_labels = splits[split]
      assert images.shape == (len(data), 32, 32, 3) and images.dtype == np.uint8
      np.testing.assert_array_equal(read_labels, labels)
      # Row-major planes: red of pixel (row 1, column 2) is byte 32 + 2, its blue 2048 + 34.
      assert images[0, 1, 2, 0] == data[0, 34] and images[0, 1, 2, 2] == data[0, 2048 + 34]
    assert len(splits["train"][1]) == 5 * CIFAR10_BATCH_SIZE

  def test_missing_batches_are_named(self, tmp_path):
    assert not offline.has_cifar10(tmp_path)
    folder = tmp_path / offline.CIFAR10_FOLDER
    write_cifar10_folder(folder)
    (folder / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="lacks the CIFAR-10 batch.es. data_batch_4"):
      offline.read_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither cifar-10-python.tar.gz"):
      offline.read_cifar10(tmp_path / "empty")

  def test_a_damaged_batch_is_named(self, tmp_path):
    folder = tmp_path / offline.CIFAR10_FOLDER
    batches = write_cifar10_folder(folder)
    data, labels = batches["test_batch"]
    (folder / "test_batch").write_bytes(batch_pickle(data[:, :100], labels))
    with pytest.raises(ValueError, match=r"test_batch: data must be uint8 \(N, 3072\)"):
      offline.read_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch"):
      offline.read_cifar10(tmp_path)

  def test_a_batch_cannot_run_code(self, tmp_path):
    folder = tmp_path / offline.CIFAR10_FOLDER
    write_cifar10_folder(folder)

    class Exploit:
      def __reduce__(self):
        return (os.system, ("echo unsafe > " + str(tmp_path / "ran"),))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(ValueError, match="unexpected object"):
      offline.read_cifar10(tmp_path)
    assert not (tmp_path / "ran").exists()

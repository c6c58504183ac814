"""The input pipeline: shards, seeded per-epoch permutations, exact resume, eval batches."""

import json
import os
import pathlib
import socket
import sys
import time
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxflow.data import datasets, pipeline, tf_cpu
from training_helpers import run_together

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def numbered(size: int, side: int = 4) -> tf.data.Dataset:
  """Examples whose label is their index and whose image is filled with it (mod 256)."""
  index = np.arange(size)
  images = np.broadcast_to((index % 256).astype(np.uint8)[:, None, None, None],
                           (size, side, side, 1))
  return tf.data.Dataset.from_tensor_slices({
      "image": images, "label": index.astype(np.int32),
      "subject": [f"p{i % 3}" for i in index]})


def sharding() -> NamedSharding:
  return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))


def labels_of(batches):
  return [np.asarray(batch["label"]).tolist() for batch in batches]


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_batches_are_sharded_uint8_images_and_int32_labels():
  dataset, _ = datasets.load("digits", "train")
  batch = next(pipeline.TrainIterator(dataset, global_batch_size=32, sharding=sharding(),
                                      seed=0))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (32, 8, 8, 1) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
  assert batch["image"].sharding == sharding() and batch["label"].sharding == sharding()
  assert set(np.asarray(batch["label"]).tolist()) <= set(range(10))
  assert np.asarray(batch["image"]).max() > 0


def test_two_processes_read_disjoint_shards_that_cover_the_split():
  dataset = numbered(23)
  shards = [pipeline.read_shard(dataset, process_index=i, process_count=2) for i in range(2)]
  labels = [set(shard["label"].tolist()) for shard in shards]
  assert [len(shard["label"]) for shard in shards] == [12, 11]
  assert not labels[0] & labels[1] and labels[0] | labels[1] == set(range(23))
  for shard in shards:
    assert (shard["image"][:, 0, 0, 0] == shard["label"]).all()  # images follow their labels


def test_two_processes_stream_disjoint_parts_of_every_epoch():
  dataset = numbered(20)
  streams = []
  for process_index in range(2):
    shard = pipeline.read_shard(dataset, process_index=process_index, process_count=2)
    batches = pipeline.host_batches(shard, batch_size=5, seed=7, stream=process_index)
    streams.append(np.concatenate(labels_of(batches.take(4).as_numpy_iterator())))
  for epoch in range(2):
    parts = [set(stream[epoch * 10:(epoch + 1) * 10].tolist()) for stream in streams]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(20))


def test_every_epoch_is_a_permutation_and_epochs_differ():
  shard = pipeline.read_shard(numbered(10), process_index=0, process_count=1)
  stream = np.concatenate(labels_of(
      pipeline.host_batches(shard, batch_size=4, seed=1).take(10).as_numpy_iterator()))
  epochs = stream.reshape(4, 10)
  assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
  assert len({tuple(epoch) for epoch in epochs}) == 4


def test_the_order_is_a_function_of_seed_stream_and_position():
  shard = pipeline.read_shard(numbered(50), process_index=0, process_count=1)

  def order(seed, stream=0, start_step=0):
    batches = pipeline.host_batches(shard, batch_size=10, seed=seed, stream=stream,
                                    start_step=start_step)
    return labels_of(batches.take(3).as_numpy_iterator())

  assert order(3) == order(3)
  assert order(3) != order(4) and order(3) != order(3, stream=1)
  assert order(3, start_step=7) == labels_of(pipeline.host_batches(
      shard, batch_size=10, seed=3).skip(7).take(3).as_numpy_iterator())


class TestResume:

  def make(self, dataset, seed=11):
    return pipeline.TrainIterator(dataset, global_batch_size=6, sharding=sharding(), seed=seed)

  def test_a_restored_iterator_continues_exactly(self):
    dataset = numbered(17)
    original = self.make(dataset)
    take(original, 7)
    state = json.loads(json.dumps(original.get_state()))
    assert state == {"step": 7, "seed": 11, "global_batch_size": 6, "process_count": 1}
    expected = labels_of(take(original, 5))
    restored = self.make(dataset)
    take(restored, 2)  # wherever it was, set_state moves it
    restored.set_state(state)
    assert labels_of(take(restored, 5)) == expected
    uninterrupted = self.make(dataset)
    assert labels_of(take(uninterrupted, 12))[7:] == expected

  def test_restoring_far_into_training_takes_constant_time(self):
    iterator = self.make(numbered(17))
    state = {**iterator.get_state(), "step": 10**12}
    start = time.perf_counter()
    iterator.set_state(state)
    batch = next(iterator)
    # Stepping through 10**12 batches would take days: the limit needs only to catch that, and is
    # far above a loaded machine's time (under a second on a quiet one).
    assert time.perf_counter() - start < 60
    assert iterator.get_state()["step"] == 10**12 + 1
    shard = pipeline.read_shard(numbered(17), process_index=0, process_count=1)
    expected = next(pipeline.host_batches(shard, batch_size=6, seed=11,
                                          start_step=10**12).as_numpy_iterator())
    np.testing.assert_array_equal(np.asarray(batch["label"]), expected["label"])

  def test_the_state_is_plain_json_even_from_numpy_settings(self):
    iterator = pipeline.TrainIterator(numbered(17), global_batch_size=np.int64(6),
                                      sharding=sharding(), seed=np.uint32(11))
    next(iterator)
    assert json.dumps(iterator.get_state()) == (
        '{"step": 1, "seed": 11, "global_batch_size": 6, "process_count": 1}')

  @pytest.mark.parametrize("change,message", [
      ({"seed": 12}, "state.'seed'. is 12 but this iterator has 11"),
      ({"global_batch_size": 12}, "state.'global_batch_size'. is 12"),
      ({"process_count": 2}, "state.'process_count'. is 2"),
      ({"step": -1}, "state.'step'. must be a non-negative integer"),
      ({"step": 1.5}, "state.'step'. must be a non-negative integer"),
  ])
  def test_a_state_that_cannot_be_continued_is_refused(self, change, message):
    iterator = self.make(numbered(17))
    with pytest.raises(ValueError, match=message):
      iterator.set_state({**iterator.get_state(), **change})


@pytest.mark.parametrize("kwargs,message", [
    (dict(global_batch_size=7, process_count=2, process_index=0),
     "global_batch_size must be a positive multiple of the 2 process"),
    (dict(global_batch_size=0), "global_batch_size must be a positive multiple"),
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*63\)"),
    (dict(process_index=2, process_count=2),
     r"process_index must lie in \[0, process_count=2\)"),
])
def test_bad_settings_are_named(kwargs, message):
  settings = {"global_batch_size": 4, "sharding": sharding(), "seed": 0, **kwargs}
  with pytest.raises(ValueError, match=message):
    pipeline.TrainIterator(numbered(8), **settings)


def test_datasets_not_in_the_common_format_are_refused():
  floats = tf.data.Dataset.from_tensor_slices({"image": np.zeros((4, 2, 2, 1), np.float32),
                                               "label": np.zeros(4, np.int32)})
  with pytest.raises(ValueError, match="dataset: 'image' must be uint8 .H, W, C."):
    pipeline.read_shard(floats, process_index=0, process_count=1)
  tuples = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2, 2, 1), np.uint8), np.zeros(4)))
  with pytest.raises(ValueError, match="elements must be dicts with 'image' and 'label'"):
    pipeline.eval_batches(tuples, batch_size=2).__next__()
  with pytest.raises(ValueError, match="process 1 of 8 got no examples"):
    pipeline.read_shard(numbered(1), process_index=1, process_count=8)


def test_features_asked_for_travel_with_their_examples():
  dataset = numbered(5).map(lambda example: {**example, "intensity": tf.cast(
      example["label"], tf.float32) / 10, "vector": tf.fill([2], example["label"])})
  batch = next(pipeline.TrainIterator(dataset, global_batch_size=4, sharding=sharding(), seed=0,
                                      features=("intensity", "vector")))
  assert set(batch) == {"image", "label", "intensity", "vector"}
  np.testing.assert_allclose(np.asarray(batch["intensity"]), np.asarray(batch["label"]) / 10)
  np.testing.assert_array_equal(np.asarray(batch["vector"]),
                                np.repeat(np.asarray(batch["label"])[:, None], 2, axis=1))
  with pytest.raises(ValueError, match="feature 'subject' must be a numeric feature"):
    pipeline.read_shard(dataset, process_index=0, process_count=1, features=("subject",))


class TestEvalBatches:

  def test_one_masked_pass_per_process_covering_every_example_once(self):
    dataset = numbered(7)
    per_process = [list(pipeline.eval_batches(dataset, batch_size=3, process_index=i,
                                              process_count=2)) for i in range(2)]
    assert [len(batches) for batches in per_process] == [2, 2]  # lockstep across processes
    seen = []
    for batches in per_process:
      for batch in batches:
        assert batch["image"].shape == (3, 4, 4, 1) and batch["label"].dtype == np.int32
        seen += batch["label"][batch["mask"]].tolist()
        assert (batch["image"][~batch["mask"]] == 0).all()
        assert set(batch["subject"][~batch["mask"]]) <= {""}
    assert sorted(seen) == list(range(7))
    first = per_process[0][0]
    assert first["label"].tolist() == [0, 2, 4] and first["subject"].tolist() == ["p0", "p2",
                                                                                   "p1"]
    assert per_process[1][1]["mask"].tolist() == [False, False, False]

  def test_a_single_process_sees_everything_in_order(self):
    dataset, info = datasets.load("digits", "test")
    batches = list(pipeline.eval_batches(dataset, batch_size=100))
    assert [batch["mask"].sum() for batch in batches] == [100, 100, 100, 60]
    labels = np.concatenate([batch["label"][batch["mask"]] for batch in batches])
    assert labels.tolist() == [ex["label"] for ex in dataset.as_numpy_iterator()]
    assert len(labels) == info.num_examples["test"]

  def test_an_endless_dataset_is_refused(self):
    with pytest.raises(ValueError, match="needs a finite dataset"):
      next(pipeline.eval_batches(numbered(3).repeat(), batch_size=2))


def test_tensorflow_is_kept_off_gpus():
  with mock.patch.object(tf.config, "set_visible_devices") as hide:
    tf_cpu.hide_accelerators_from_tensorflow()
  hide.assert_called_once_with([], "GPU")
  with mock.patch.object(tf.config, "set_visible_devices", side_effect=RuntimeError("late")), \
       mock.patch.object(tf.config, "get_visible_devices", return_value=["GPU:0"]):
    with pytest.raises(RuntimeError, match="initialised its GPUs before data.tf_cpu"):
      tf_cpu.hide_accelerators_from_tensorflow()
  assert tf.config.get_visible_devices("GPU") == []


_WORKER = """
import json, sys
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
process_id, port = int(sys.argv[1]), sys.argv[2]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
from flaxflow.data import datasets, pipeline
dataset, _ = datasets.load("digits", "train")
mesh = Mesh(np.array(jax.devices()), ("data",))
iterator = pipeline.TrainIterator(dataset, global_batch_size=8, seed=5,
                                  sharding=NamedSharding(mesh, PartitionSpec("data")))
labels = []
for _ in range(3):
  batch = next(iterator)
  labels.append(multihost_utils.process_allgather(batch["label"], tiled=True).tolist())
print("RESULT " + json.dumps({"labels": labels, "image_shape": list(batch["image"].shape),
                              "devices": [len(jax.local_devices()), len(jax.devices())],
                              "state": iterator.get_state()}))
"""


@pytest.mark.slow
def test_two_jax_processes_build_global_batches_from_their_shards():
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    port = probe.getsockname()[1]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
  results = run_together([[sys.executable, "-c", _WORKER, str(i), str(port)] for i in range(2)],
                         env)
  dataset, _ = datasets.load("digits", "train")
  expected = []
  for process_index in range(2):
    shard = pipeline.read_shard(dataset, process_index=process_index, process_count=2)
    batches = pipeline.host_batches(shard, batch_size=4, seed=5, stream=process_index)
    expected.append(labels_of(batches.take(3).as_numpy_iterator()))
  for result in results:
    assert result["devices"] == [2, 4] and result["image_shape"] == [8, 8, 8, 1]
    assert result["labels"] == [first + second for first, second in zip(*expected)]
    assert result["state"] == results[0]["state"] == {
        "step": 3, "seed": 5, "global_batch_size": 8, "process_count": 2}

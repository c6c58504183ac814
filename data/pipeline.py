"""Input pipelines: per-process shards of a dataset to batches for training and evaluation.

Training (`TrainIterator`). Each JAX process keeps the examples `i` with
`i % process_count == process_index` (so the processes' parts are disjoint and together cover
the split), decoded, in host memory. A tf.data pipeline then runs over stream positions: a
position maps to an example through a fresh seeded permutation of the shard per epoch
(`tf.random.experimental.index_shuffle`), positions are batched to the per-process batch, the
images gathered, and batches prefetched; each batch becomes one global `jax.Array` per key,
sharded along the batch axis (`jax.make_array_from_process_local_data`).

The order is a pure function of (seed, process, position), so the iterator's state is the number
of batches taken and restoring it starts the pipeline at that position: O(1), however far
training went. The price is the shard held decoded in memory (64x64 EmotionSet or CIFAR-10:
about 150 MB in all, divided among the processes). The alternatives were worse for these
datasets: tf.data's own iterator checkpoints store the shuffle buffer (large, not JSON), and a
streaming shuffle buffer replays the epoch up to the saved position on every restore.

Evaluation (`eval_batches`) is one ordered pass over the process's shard in fixed-size,
masked batches.

Training batches hold "image" and "label" and any other numeric `features` of the elements
asked for (e.g. synthetic faces' "intensity", for a model whose training target depends on it).
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping, Optional, Sequence

import jax
import numpy as np

from flaxflow.data.tf_cpu import tf

_READ_BATCH = 1024
_MAX_SEED = 2**63 - 1


def read_shard(dataset: tf.data.Dataset, *, process_index: int, process_count: int,
               features: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """This process's part of `dataset`, decoded: {"image": uint8 (N, H, W, C), "label": int32}
  and each of `features`."""
  _check_elements(dataset, features)
  shard = dataset.shard(process_count, process_index).map(
      lambda example: {"image": example["image"], "label": tf.cast(example["label"], tf.int32),
                       **{name: example[name] for name in features}})
  parts = list(shard.batch(_READ_BATCH).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
  if not parts:
    raise ValueError(f"dataset: process {process_index} of {process_count} got no examples")
  return {key: np.concatenate([part[key] for part in parts])
          for key in ("image", "label", *features)}


def host_batches(examples: Mapping[str, np.ndarray], *, batch_size: int, seed: int,
                 stream: int = 0, start_step: int = 0) -> tf.data.Dataset:
  """Endless batches of `examples`, each epoch a seeded permutation, from batch `start_step`.

  Position p of the stream is example `permutation(seed, stream, p // n)[p % n]` of the n
  examples; `stream` (the process index) gives every process its own permutations.
  """
  size = len(examples["label"])
  tensors = {key: tf.constant(value) for key, value in examples.items()}

  def gather(positions):
    epochs = positions // size
    # One (seed, stream, epoch) key per position: the raw op takes these 3-part keys directly
    # (tf.random.experimental.index_shuffle pads batched 2-part seeds along the wrong axis).
    keys = tf.stack([tf.fill(tf.shape(epochs), tf.constant(seed, tf.int64)),
                     tf.fill(tf.shape(epochs), tf.constant(stream, tf.int64)), epochs], axis=-1)
    indices = tf.raw_ops.RandomIndexShuffle(
        index=positions % size, seed=keys, max_index=tf.constant(size - 1, tf.int64), rounds=4)
    return {key: tf.gather(value, indices) for key, value in tensors.items()}

  positions = tf.data.Dataset.range(start_step * batch_size, tf.int64.max)
  return (positions.batch(batch_size, drop_remainder=True)
          .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


class TrainIterator:
  """Endless, shuffled global batches: {"image": uint8 (B, H, W, C), "label": int32 (B,)} and
  each of `features`.

  Each process contributes `global_batch_size // process_count` examples of its shard to every
  batch; the arrays are sharded along axis 0 by `sharding` (e.g.
  `NamedSharding(mesh, PartitionSpec("data"))`). Every epoch of a shard is a full permutation.
  `get_state()` is small, JSON-serialisable and the same on every process; `set_state` continues
  exactly where the saved iterator was, in constant time.
  """

  def __init__(self, dataset: tf.data.Dataset, *, global_batch_size: int,
               sharding: jax.sharding.Sharding, seed: int, process_index: Optional[int] = None,
               process_count: Optional[int] = None, features: Sequence[str] = ()):
    process_index, process_count = _process(process_index, process_count)
    if not (_is_integer(global_batch_size) and global_batch_size > 0
            and global_batch_size % process_count == 0):
      raise ValueError(f"global_batch_size must be a positive multiple of the {process_count} "
                       f"process(es), got {global_batch_size!r}")
    if not (_is_integer(seed) and 0 <= seed <= _MAX_SEED):
      raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    self._sharding = sharding
    self._config = {"seed": int(seed), "global_batch_size": int(global_batch_size),
                    "process_count": process_count}
    self._process_index = process_index
    self._per_process_batch = int(global_batch_size) // process_count
    self._examples = read_shard(dataset, process_index=process_index,
                                process_count=process_count, features=features)
    self._restart(0)

  @property
  def num_local_examples(self) -> int:
    """The size of this process's shard, i.e. of one of its epochs."""
    return len(self._examples["label"])

  def _restart(self, step: int) -> None:
    self._step = step
    self._batches = host_batches(
        self._examples, batch_size=self._per_process_batch, seed=self._config["seed"],
        stream=self._process_index, start_step=step).as_numpy_iterator()

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict[str, jax.Array]:
    batch = next(self._batches)
    self._step += 1
    return {key: jax.make_array_from_process_local_data(self._sharding, value)
            for key, value in batch.items()}

  def get_state(self) -> dict:
    """{"step": batches taken, plus the settings a restore must match}."""
    return {"step": self._step, **self._config}

  def set_state(self, state: dict) -> None:
    """Continues from `state` (from `get_state`), which must have been saved with this seed,
    global batch size and process count."""
    for key, value in self._config.items():
      if state.get(key) != value:
        raise ValueError(f"state[{key!r}] is {state.get(key)!r} but this iterator has "
                         f"{value!r}; the saved data order cannot be continued")
    step = state.get("step")
    if not (_is_integer(step) and step >= 0):
      raise ValueError(f"state['step'] must be a non-negative integer, got {step!r}")
    self._restart(int(step))


def eval_batches(dataset: tf.data.Dataset, *, batch_size: int,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's shard, in dataset order, in batches of exactly `batch_size`.

  Batches hold "image", "label", "subject" (str) and "mask" (bool). Rows past the end are
  padding (zero image, label 0, subject "") with mask False and must be left out of metrics.
  Every process yields the same number of batches, enough for the largest shard, so that SPMD
  evaluation steps stay in lockstep.
  """
  process_index, process_count = _process(process_index, process_count)
  if not (_is_integer(batch_size) and batch_size > 0):
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  _check_elements(dataset)
  image_shape = tuple(dataset.element_spec["image"].shape)
  num_batches = math.ceil(math.ceil(_count(dataset) / process_count) / batch_size)
  batches = (dataset.shard(process_count, process_index).batch(batch_size)
             .prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
  for _ in range(num_batches):
    batch = next(batches, None)
    padded = {"image": np.zeros((batch_size, *image_shape), np.uint8),
              "label": np.zeros(batch_size, np.int32),
              "subject": np.full(batch_size, "", dtype=object),
              "mask": np.zeros(batch_size, bool)}
    if batch is not None:
      size = len(batch["label"])
      padded["image"][:size] = batch["image"]
      padded["label"][:size] = batch["label"]
      padded["mask"][:size] = True
      if "subject" in batch:
        padded["subject"][:size] = [subject.decode() for subject in batch["subject"]]
    yield padded


def _is_integer(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _process(process_index: Optional[int], process_count: Optional[int]) -> tuple[int, int]:
  """The given process index and count, defaulting to JAX's."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must lie in [0, process_count={process_count}), "
                     f"got {process_index}")
  return process_index, process_count


def _check_elements(dataset: tf.data.Dataset, features: Sequence[str] = ()) -> None:
  spec = dataset.element_spec
  if not isinstance(spec, dict) or not {"image", "label"} <= set(spec):
    raise ValueError("dataset: elements must be dicts with 'image' and 'label' "
                     f"(as from flaxflow.data.datasets.load), got {spec}")
  for name in features:
    if name not in spec or spec[name].dtype == tf.string or not spec[name].shape.is_fully_defined():
      raise ValueError(f"dataset: feature {name!r} must be a numeric feature of one fixed shape "
                       f"of the elements, which have {', '.join(sorted(spec))}")
  image, label = spec["image"], spec["label"]
  if image.dtype != tf.uint8 or image.shape.rank != 3 or not image.shape.is_fully_defined():
    raise ValueError("dataset: 'image' must be uint8 (H, W, C) of one fixed shape, got "
                     f"{image.dtype.name} {image.shape}")
  if not label.dtype.is_integer or label.shape.rank != 0:
    raise ValueError(f"dataset: 'label' must be an integer scalar, got {label.dtype.name} "
                     f"{label.shape}")


def _count(dataset: tf.data.Dataset) -> int:
  size = int(dataset.cardinality())
  if size == tf.data.INFINITE_CARDINALITY:
    raise ValueError("dataset: an evaluation pass needs a finite dataset (no .repeat())")
  if size >= 0:
    return size
  return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))

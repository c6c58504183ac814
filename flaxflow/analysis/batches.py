"""Masked numpy batches in and per-example results out, for the analysis tools.

Batches are dicts of numpy arrays as `data.pipeline.eval_batches` gives them: "image" uint8
(B, H, W, C), "label" int (B,), "mask" bool (B,) (False marks padding) and, optionally, "subject"
(B,) strings. Every batch of one pass has the same size, so a jitted function compiles once.
"""

from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple

import jax
import numpy as np

from flaxflow import parallel

Batch = Mapping[str, np.ndarray]
Examples = Dict[str, np.ndarray]
REQUIRED_KEYS = ("image", "label")


def _check_batch(batch: Batch) -> None:
  missing = [key for key in REQUIRED_KEYS if key not in batch]
  if missing:
    raise ValueError(f"batches: a batch lacks {', '.join(missing)} (has {sorted(batch)})")


def real_rows(batch: Batch) -> np.ndarray:
  """The boolean mask of the batch's real (non-padding) rows."""
  return np.asarray(batch.get("mask", np.ones(len(batch["label"]), bool)), bool)


def array_batches(examples: Mapping[str, np.ndarray], batch_size: int) -> Iterator[Examples]:
  """`examples` (arrays of equal length) in order, as padded batches of `batch_size` with a mask."""
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: expected a positive integer")
  _check_batch(examples)
  size = len(examples["label"])
  for start in range(0, size, batch_size):
    stop = min(start + batch_size, size)
    batch = {}
    for key, values in examples.items():
      values = np.asarray(values)
      padded = np.zeros((batch_size, *values.shape[1:]), values.dtype)
      if values.dtype == object:
        padded[:] = ""
      padded[:stop - start] = values[start:stop]
      batch[key] = padded
    batch["mask"] = np.arange(batch_size) < stop - start
    yield batch


def collect_examples(batches: Iterable[Batch]) -> Examples:
  """All real rows of `batches`, concatenated; "subject" becomes a str array ("" if absent)."""
  parts = []
  for batch in batches:
    _check_batch(batch)
    keep = real_rows(batch)
    subjects = batch.get("subject", np.full(len(keep), "", object))
    parts.append({"image": np.asarray(batch["image"])[keep],
                  "label": np.asarray(batch["label"], np.int32)[keep],
                  "subject": np.asarray(subjects, object)[keep].astype(str)})
  if not parts:
    raise ValueError("batches: no batches")
  return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def map_batches(fn: Callable[..., Dict[str, jax.Array]], batches: Iterable[Batch],
                mesh: Optional[jax.sharding.Mesh] = None
                ) -> Iterator[Tuple[Dict[str, np.ndarray], Examples]]:
  """Yields `fn(images, labels, batch_index)`'s per-example outputs and the batch, real rows only.

  `fn` (jitted by the caller) gets the batch's images and labels split over `mesh` (default: all
  devices), so the batch size must be divisible by the number of devices.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  sharding = parallel.batch_sharding(mesh)
  for index, batch in enumerate(batches):
    _check_batch(batch)
    parallel.check_batch_size(len(batch["label"]), mesh)
    inputs = parallel.global_batch_from_full(
        {"image": batch["image"], "label": np.asarray(batch["label"], np.int32)}, sharding)
    outputs = jax.device_get(fn(inputs["image"], inputs["label"], index))
    keep = real_rows(batch)
    yield ({name: np.asarray(value)[keep] for name, value in outputs.items()},
           {name: np.asarray(value)[keep] for name, value in batch.items() if name != "mask"})

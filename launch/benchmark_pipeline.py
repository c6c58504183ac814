"""Measures the input pipeline's throughput on EmotionSet records at 48x48 and 64x64.

The records are synthetic: a FER2013-format CSV of smooth random faces-sized images (no face
detection involved) is built into real EmotionSet TFRecords in a temporary folder by the
EmotionSet builder, then read back through `data.datasets.load` and `data.pipeline`:

    python -m launch.benchmark_pipeline [--num_examples 10000] [--global_batch_size 256]

Reported per config, in examples/s: the build, the start-up of `TrainIterator` (reading and
decoding this process's shard), its steady state (global batches placed on the devices), and
one `eval_batches` pass; each timing but the build is the median of `--repeats` runs.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import cv2
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxflow.data import datasets, pipeline
from flaxflow.data.emotion_set import build
from flaxflow.data.sources import fer2013
from flaxflow.launch.timing import wall_times

_CONFIGS = ("48", "64")


def write_synthetic_fer2013(root: pathlib.Path, num_examples: int, seed: int = 0) -> None:
  """A fer2013.csv of smooth random 48x48 images with random labels, all in Training."""
  rng = np.random.default_rng(seed)
  (root / "fer2013").mkdir(parents=True, exist_ok=True)
  with open(root / "fer2013" / fer2013.FILE_NAME, "w") as file:
    file.write("emotion,pixels,Usage\n")
    for _ in range(num_examples):
      coarse = rng.uniform(0, 255, (6, 6)).astype(np.float32)
      image = cv2.resize(coarse, (fer2013.SIDE, fer2013.SIDE), interpolation=cv2.INTER_CUBIC)
      image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
      file.write(f"{rng.integers(7)},{' '.join(map(str, image.ravel()))},Training\n")


def median_seconds(run, repeats: int) -> float:
  """The median wall time of `repeats` calls of `run`."""
  return float(np.median(wall_times(run, repeats)))


def rate(count: int, seconds: float) -> str:
  return f"{count / seconds:,.0f}"


def measure(config: str, data_dir: str, global_batch_size: int, steps: int,
            repeats: int) -> dict:
  """Examples/s of TrainIterator start-up and steady state, and of one eval pass."""
  dataset, info = datasets.load(f"emotion_set/{config}", "train", data_dir=data_dir)
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))

  def start_iterator():
    return pipeline.TrainIterator(dataset, global_batch_size=global_batch_size,
                                  sharding=sharding, seed=0)

  iterator = start_iterator()
  for _ in range(5):  # warm-up: tf.data threads, first transfers
    jax.block_until_ready(next(iterator))

  def train_steps():
    for _ in range(steps):
      batch = next(iterator)
    jax.block_until_ready(batch)

  def eval_pass():
    for _ in pipeline.eval_batches(dataset, batch_size=global_batch_size):
      pass

  num_examples = info.num_examples["train"]
  return {"config": f"{config}x{config}", "examples": num_examples,
          "startup": rate(iterator.num_local_examples, median_seconds(start_iterator, repeats)),
          "train": rate(steps * global_batch_size, median_seconds(train_steps, repeats)),
          "eval": rate(num_examples, median_seconds(eval_pass, repeats))}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m launch.benchmark_pipeline",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_examples", type=int, default=10_000)
  parser.add_argument("--global_batch_size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=2000, help="timed training batches")
  parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
  args = parser.parse_args(argv)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, "
        f"CPU cores: {os.cpu_count()}")
  rows = []
  with tempfile.TemporaryDirectory() as work_dir:
    manual_dir, data_dir = pathlib.Path(work_dir) / "manual", str(pathlib.Path(work_dir) / "tfds")
    write_synthetic_fer2013(manual_dir, args.num_examples)
    for config in _CONFIGS:
      start = time.perf_counter()
      build(str(manual_dir), data_dir, [config])
      built = rate(args.num_examples, time.perf_counter() - start)
      rows.append({**measure(config, data_dir, args.global_batch_size, args.steps,
                           args.repeats), "build": built})
  print(f"\nexamples/s, global batch {args.global_batch_size}:")
  print("| records | examples | build | TrainIterator start-up | TrainIterator steady | "
        "eval_batches |")
  print("|---|---|---|---|---|---|")
  for row in rows:
    print(f"| {row['config']} | {row['examples']} | {row['build']} | {row['startup']} | "
          f"{row['train']} | {row['eval']} |")
  print("\nrerun: " + " ".join(["python -m launch.benchmark_pipeline",
                                 *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
  main()

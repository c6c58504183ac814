"""Benchmarks flaxflow's jitted train step, against normflows' PyTorch Glow in the same run.

  python -m launch.benchmark --suite=peer --output=/tmp/peer.json    # the two peer comparisons
  python -m launch.benchmark --suite=depth --output=/tmp/depth.json  # K=8 vs K=32: compile, memory
  python -m launch.benchmark --suite=single --model=bplf --steps=8 --width=128 --image_shape=32,32,3

Prints one JSON record per measurement and writes them all to --output. The peer needs the `bench`
extra (`pip install -e ".[bench]"`).
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Sequence

import jax

from flaxflow import benchmarking, host_memory

# The two configurations of the peer comparison: class-conditional Glow, L=3, K=8, width 128.
PEER_CONFIGS = (
    dict(image_shape=(32, 32, 3), num_classes=10),
    dict(image_shape=(48, 48, 1), num_classes=7),
)


def model_config(args, **overrides) -> Dict[str, Any]:
  config = dict(name=args.model, image_shape=args.image_shape, num_classes=args.num_classes,
                levels=args.levels, steps_per_level=args.steps, width=args.width,
                gradient=args.gradient, scan_unroll=args.scan_unroll, dtype=args.dtype)
  config.update(overrides)
  if config["name"] == "classifier":
    config["num_classes"] = max(config["num_classes"], 2)
  return config


def run_jax(args, **overrides) -> Dict[str, Any]:
  record = benchmarking.benchmark_train_step(model_config(args, **overrides),
                                             batch_size=args.batch_size,
                                             warmup_steps=args.warmup_steps,
                                             timed_steps=args.timed_steps)
  record["framework"] = f"flaxflow (jax {jax.__version__})"
  return record


def run_peer(args, image_shape, num_classes) -> Dict[str, Any]:
  from launch import benchmark_peer  # Imports torch: only when the peer runs.
  return benchmark_peer.benchmark_peer(levels=args.levels, steps=args.steps, width=args.width,
                                       image_shape=image_shape, num_classes=num_classes,
                                       batch_size=args.batch_size,
                                       warmup_steps=args.warmup_steps,
                                       timed_steps=args.timed_steps)


def peer_suite(args) -> List[Dict[str, Any]]:
  records = []
  for peer_config in PEER_CONFIGS:
    ours = run_jax(args, name="glow", **peer_config)
    theirs = run_peer(args, **peer_config)
    comparison = {"comparison": peer_config,
                  "images_per_second_ratio": ours["images_per_second"] /
                                             theirs["images_per_second"]}
    records += [ours, theirs, comparison]
  return records


def depth_suite(args) -> List[Dict[str, Any]]:
  records = []
  for gradient in ("plain", "reversible"):
    shallow = run_jax(args, steps_per_level=8, gradient=gradient)
    deep = run_jax(args, steps_per_level=32, gradient=gradient)
    records += [shallow, deep, {
        "comparison": f"K=32 over K=8, gradient={gradient}",
        "compile_seconds_ratio": deep["compile_seconds"] / shallow["compile_seconds"],
        "peak_memory_ratio": deep["memory_bytes"]["peak"] / shallow["memory_bytes"]["peak"],
        "temp_memory_ratio": deep["memory_bytes"]["temp"] / shallow["memory_bytes"]["temp"],
        "peak_beyond_state_and_gradient_ratio": (
            deep["memory_bytes"]["peak_beyond_state_and_gradient"]
            / shallow["memory_bytes"]["peak_beyond_state_and_gradient"]),
    }]
  return records


def _int_tuple(text: str) -> tuple:
  try:
    return tuple(int(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers like 32,32,3, got {text!r}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--suite", choices=("peer", "depth", "single"), default="single")
  parser.add_argument("--model", choices=("glow", "bplf", "classifier"), default="glow")
  parser.add_argument("--levels", type=int, default=3)
  parser.add_argument("--steps", type=int, default=8, help="flow steps per level (K)")
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--image_shape", type=_int_tuple, default=(32, 32, 3), help="H,W,C")
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--gradient", choices=("plain", "remat", "reversible"), default="plain")
  parser.add_argument("--scan_unroll", type=int, default=1,
                      help="flow steps per scan iteration (K unrolls a level fully)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype of the coupling networks (log-dets and loss stay float32)")
  parser.add_argument("--warmup_steps", type=int, default=2)
  parser.add_argument("--timed_steps", type=int, default=10)
  parser.add_argument("--system_malloc", action="store_true",
                      help="keep the C library's default allocator settings (for comparison)")
  parser.add_argument("--output", default=None, help="write all records to this JSON file")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  if not args.system_malloc:
    host_memory.retain_freed_memory()
  matmul = {"matmul_2048_float32_flops_per_second": benchmarking.matmul_flops_per_second(),
            "device": jax.devices()[0].device_kind, "cores": os.cpu_count()}
  print(json.dumps(matmul), flush=True)
  suites = {"peer": peer_suite, "depth": depth_suite, "single": lambda args: [run_jax(args)]}
  records = [matmul]
  for record in suites[args.suite](args):
    summary = {k: v for k, v in record.items() if k != "step_seconds"}
    print(json.dumps(summary), flush=True)
    records.append(record)
  print(f"rerun: python -m launch.benchmark {' '.join(argv)}")
  if args.output:
    with open(args.output, "w") as file:
      json.dump(records, file, indent=2)


if __name__ == "__main__":
  main(sys.argv[1:])

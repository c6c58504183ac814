"""Benchmarks flaxflow's jitted train step against PyTorch peers in one run, and its convolutions.

  python -m launch.benchmark --suite=peer --output=/tmp/peer.json    # Glow and BPLF vs PyTorch
  python -m launch.benchmark --suite=conv --output=/tmp/conv.json    # every layer, both paths
  python -m launch.benchmark --suite=depth --output=/tmp/depth.json  # K=8 vs K=32: compile, memory
  python -m launch.benchmark --suite=gradient --model=bplf --rounds=6 --timed_steps=3  # A/B
  python -m launch.benchmark --suite=single --model=bplf --steps=8 --width=128 --image_shape=32,32,3
  python -m launch.benchmark --model=decgan --batch_size=16   # a GAN's step (also ifgan)
  python -m launch.benchmark --profile_dir=/tmp/trace   # + time per XLA operation of the step

Prints one JSON record per measurement and writes them all to --output. The peers (normflows' Glow,
a torch.nn BPLF, torch.nn's convolutions) need the `bench` extra (`pip install -e ".[bench]"`).
"""

import argparse
import collections
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Sequence

import jax
import ml_collections

from flaxflow.models.step_stack import GRADIENT_MODES
from flaxflow.launch import benchmarking, host_memory
from flaxflow.launch.arguments import int_tuple, positive_int

# The two configurations of the peer comparison: class-conditional flows, L=3, K=8, width 128.
PEER_CONFIGS = (
    dict(image_shape=(32, 32, 3), num_classes=10),
    dict(image_shape=(48, 48, 1), num_classes=7),
)
# Every model family of the conv suite, at the peer sizes and at MNIST size (L=2, K=4, width 64).
_FAMILIES = (dict(name="glow"), dict(name="bplf", g_variant="3x3"),
             dict(name="bplf", g_variant="3x3-1x1"), dict(name="classifier"))
CONV_SUITE_MODELS = tuple(
    [dict(family, levels=3, steps_per_level=8, width=128, **peer)
     for peer in PEER_CONFIGS for family in _FAMILIES]
    + [dict(family, image_shape=(28, 28, 1), num_classes=10, levels=2, steps_per_level=4,
            width=64) for family in _FAMILIES])
# The GANs' layers (NHWC input, HWIO kernel, padding as a PyTorch user writes it): the U-Net's
# 4x4 stride-2 encoder and decoder convolutions, DECGAN's 7x7 encoder stem and discriminator.
GAN_LAYERS = (
    dict(name="U-Net encoder 4x4/2 64->128", input_shape=[32, 32, 32, 64],
         kernel_shape=[4, 4, 64, 128], strides=[2, 2], padding=[[1, 1], [1, 1]],
         input_dilation=[1, 1]),
    dict(name="U-Net decoder 4x4/2 transposed 128->64", input_shape=[32, 16, 16, 128],
         kernel_shape=[4, 4, 128, 64], strides=[1, 1], padding=[[2, 2], [2, 2]],
         input_dilation=[2, 2]),
    dict(name="DECGAN encoder stem 7x7 1->64", input_shape=[16, 64, 64, 1],
         kernel_shape=[7, 7, 1, 64], strides=[1, 1], padding=[[3, 3], [3, 3]],
         input_dilation=[1, 1]),
    dict(name="DECGAN discriminator 7x7/2 64->128", input_shape=[16, 64, 64, 64],
         kernel_shape=[7, 7, 64, 128], strides=[2, 2], padding=[[3, 3], [3, 3]],
         input_dilation=[1, 1]),
)
# The GANs are timed as their faces configs build them (sizes, widths, losses, optimizers).
GAN_CONFIGS = {"ifgan": "ifgan_faces", "decgan": "decgan_faces"}
FRAMEWORK = f"flaxflow (jax {jax.__version__})"


def model_config(args, **overrides) -> Dict[str, Any]:
  config = dict(name=args.model, image_shape=args.image_shape, num_classes=args.num_classes,
                levels=args.levels, steps_per_level=args.steps, width=args.width,
                gradient=args.gradient, scan_unroll=args.scan_unroll, dtype=args.dtype)
  config.update(overrides)
  if config["name"] == "bplf":
    config.setdefault("g_variant", args.g_variant)
  if config["name"] == "classifier":
    config["num_classes"] = max(config["num_classes"], 2)
  return config


def gan_config(args) -> ml_collections.ConfigDict:
  """The faces config of the GAN `args.model`, its model as that config builds it. IF-GAN's
  target faces are the paper's class pixel means of the (random) batch: the step only looks its
  targets up, and the renders of the average person that the faces config draws instead need the
  dataset's build and readers, which a benchmark on random images has not."""
  config_module = importlib.import_module(f"flaxflow.launch.configs.{GAN_CONFIGS[args.model]}")
  config = config_module.get_config()
  config.batch_size = args.batch_size
  if "target_face" in config:
    config.target_face = "class_pixel_mean"
  return config


def run_jax(args, **overrides) -> Dict[str, Any]:
  if args.model in GAN_CONFIGS:
    step = benchmarking.task_train_step(gan_config(args), batch_size=args.batch_size)
  else:
    step = benchmarking.flow_train_step(model_config(args, **overrides),
                                        batch_size=args.batch_size)
  step.run(args.warmup_steps)
  record = step.record(step.run(args.timed_steps))
  record["framework"] = FRAMEWORK
  if args.profile_dir:
    operations = benchmarking.operation_profile(step, args.timed_steps, args.profile_dir)
    print_profile(operations, record["median_step_seconds"])
    record["operation_profile"] = operations
  return record


def print_profile(operations: List[Dict[str, Any]], step_seconds: float, top: int = 25) -> None:
  """The longest operations and the time by kind of operation, as text tables."""
  by_kind = collections.Counter()
  for operation in operations:
    by_kind[operation["kind"]] += operation["milliseconds_per_step"]
  total = sum(by_kind.values())
  print(f"XLA operations: {total:.1f} ms per step in all (wall: {step_seconds * 1e3:.1f} ms; "
        "operations on different cores overlap)")
  print(f"{'ms/step':>8}  {'share':>6}  kind")
  for kind, milliseconds in by_kind.most_common(top):
    print(f"{milliseconds:8.2f}  {milliseconds / total:6.1%}  {kind}")
  print(f"{'ms/step':>8}  {'calls':>5}  operation: source")
  for operation in operations[:top]:
    print(f"{operation['milliseconds_per_step']:8.2f}  {operation['calls_per_step']:5.0f}  "
          f"{operation['operation']}: {short_source(operation['source'])}")


def short_source(op_name: str) -> str:
  """'backward level_steps_0 .../g/Conv_1/dot_general' from a JAX op_name: pass, level, layer."""
  parts = op_name.split("/")
  direction = "backward" if any(part.startswith("transpose(") for part in parts) else "forward"
  levels = [part.split(".")[0] for part in parts
            if part.startswith(("level_steps_", "split_priors_", "top_prior"))]
  return " ".join([direction, *levels[:1], "/".join(parts[-3:])])


def _run_peer_process(arguments: Sequence[str]) -> Any:
  """`launch.benchmark_peer` in a process of its own (no JAX threads, torch's own allocator)."""
  command = [sys.executable, "-m", "flaxflow.launch.benchmark_peer", *arguments]
  result = subprocess.run(command, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if result.returncode:
    raise RuntimeError(f"the peer benchmark failed ({' '.join(command)}); it needs the bench "
                       f"extra, pip install -e \".[bench]\":\n{result.stderr[-2000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def run_peer(args, model, image_shape, num_classes) -> Dict[str, Any]:
  """The PyTorch peer's step for `model` ("glow": normflows, "bplf": torch.nn)."""
  return _run_peer_process([
      f"--model={model}", f"--g_variant={args.g_variant}", f"--levels={args.levels}",
             f"--steps={args.steps}", f"--width={args.width}",
             f"--image_shape={','.join(map(str, image_shape))}", f"--num_classes={num_classes}",
             f"--batch_size={args.batch_size}", f"--warmup_steps={args.warmup_steps}",
             f"--timed_steps={args.timed_steps}"])


def compare_with_peer(args, model, image_shape, num_classes) -> List[Dict[str, Any]]:
  """flaxflow's `model` and its PyTorch peer at one configuration, timed in alternating rounds.

  The machine's speed drifts (other jobs, clocks), so each round times `timed_steps` of one
  and then of the other; the ratio is of the medians over all rounds, and each round's own
  ratio is reported too.
  """
  ours = benchmarking.flow_train_step(
      model_config(args, name=model, image_shape=image_shape, num_classes=num_classes),
      batch_size=args.batch_size)
  ours.run(args.warmup_steps)
  our_rounds, peer_rounds = [], []
  for _ in range(args.rounds):
    our_rounds.append(ours.run(args.timed_steps))
    peer_rounds.append(run_peer(args, model, image_shape, num_classes))
  our_record = ours.record([s for seconds in our_rounds for s in seconds])
  our_record["framework"] = FRAMEWORK
  peer_seconds = [s for record in peer_rounds for s in record["step_seconds"]]
  peer_record = dict(peer_rounds[-1], step_seconds=peer_seconds,
                     median_step_seconds=statistics.median(peer_seconds),
                     images_per_second=args.batch_size / statistics.median(peer_seconds),
                     load_average_1min=[record["load_average_1min"] for record in peer_rounds])
  round_ratios = [statistics.median(theirs["step_seconds"]) / statistics.median(mine)
                  for mine, theirs in zip(our_rounds, peer_rounds)]
  comparison = {
      "comparison": dict(model=model, image_shape=list(image_shape), num_classes=num_classes,
                         scan_unroll=args.scan_unroll),
      "images_per_second_ratio": our_record["images_per_second"] /
                                 peer_record["images_per_second"],
      "images_per_second_ratio_per_round": round_ratios,
  }
  return [our_record, peer_record, comparison]


def peer_suite(args) -> List[Dict[str, Any]]:
  return [record for peer_config in PEER_CONFIGS for model in args.peer_models
          for record in compare_with_peer(args, model, **peer_config)]


def conv_suite(args) -> Iterator[Dict[str, Any]]:
  """Every convolution layer of every model family and the GANs: products vs lax, torch.nn.

  Each layer's forward and backward pass is timed with `flaxflow.conv`'s products path and with
  lax's convolution, alone and inside a scan, and once with torch.nn (in its own process).
  """
  layers = {}
  for config in CONV_SUITE_MODELS:
    if args.conv_sizes and config["image_shape"][0] not in args.conv_sizes:
      continue
    for layer in benchmarking.model_convolutions(config, args.batch_size):
      key = json.dumps(layer)
      user = "{name}{variant} {image_shape} w{width}".format(
          variant=config.get("g_variant", ""), **config)
      layers.setdefault(key, dict(layer, used_by=[]))["used_by"].append(user)
  for layer in GAN_LAYERS:
    layers[json.dumps(layer)] = dict(layer, used_by=[layer["name"]])
  layers = list(layers.values())
  with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
    json.dump(layers, file)
    file.flush()
    torch_seconds = _run_peer_process([f"--conv_layers={file.name}",
                                       f"--timed_steps={args.timed_steps}"])
  for layer, torch_time in zip(layers, torch_seconds):
    times = {f"{path}_{where}": benchmarking.time_convolution(
                 layer, products=path == "products", in_scan=where == "in_scan",
                 repeats=args.timed_steps)
             for path in ("products", "lax") for where in ("alone", "in_scan")}
    record = dict(layer, torch_seconds=torch_time,
                  **{f"{name}_seconds": t["seconds"] for name, t in times.items()})
    for where in ("alone", "in_scan"):
      record[f"faster_{where}"] = min(("products", "lax"),
                                      key=lambda path: times[f"{path}_{where}"]["seconds"])
      record[f"lax_over_products_{where}"] = (times[f"lax_{where}"]["seconds"]
                                              / times[f"products_{where}"]["seconds"])
    record["products_over_torch"] = times["products_alone"]["seconds"] / torch_time
    yield record


def depth_suite(args) -> List[Dict[str, Any]]:
  records = []
  for gradient in ("plain", "save_products", "reversible"):
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


def gradient_suite(args) -> List[Dict[str, Any]]:
  """`--model`'s step under each of `--gradients`, compiled in this process and timed in
  alternating rounds (the machine's drift then hits every mode alike), with step-time and
  memory ratios to the first mode. A mode's `step_seconds` are its rounds' medians, so that one
  slow round weighs as one step."""
  steps = {gradient: benchmarking.flow_train_step(model_config(args, gradient=gradient),
                                                  batch_size=args.batch_size)
           for gradient in args.gradients}
  for step in steps.values():
    step.run(args.warmup_steps)
  seconds = {gradient: [] for gradient in steps}
  for _ in range(args.rounds):
    for gradient, step in steps.items():
      seconds[gradient].append(statistics.median(step.run(args.timed_steps)))
  records = [dict(steps[gradient].record(round_medians), framework=FRAMEWORK)
             for gradient, round_medians in seconds.items()]
  first = records[0]
  comparison = {
      "comparison": f"each gradient mode over {args.gradients[0]}",
      "step_time_ratio": {gradient: record["median_step_seconds"] / first["median_step_seconds"]
                          for gradient, record in zip(steps, records)},
      "temp_memory_ratio": {gradient: record["memory_bytes"]["temp"]
                                      / first["memory_bytes"]["temp"]
                            for gradient, record in zip(steps, records)},
  }
  return records + [comparison]


def _gradient_modes(text: str) -> List[str]:
  modes = text.split(",")
  unknown = [mode for mode in modes if mode not in GRADIENT_MODES]
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown gradient modes {unknown}; expected some of "
                                     f"{GRADIENT_MODES}")
  return modes


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--suite", choices=("peer", "depth", "single", "conv", "gradient"),
                      default="single")
  parser.add_argument("--model", choices=("glow", "bplf", "classifier", *GAN_CONFIGS),
                      default="glow",
                      help="a flow, the classifier, or a GAN as launch/configs/<gan>_faces.py "
                           "builds it (its image shape and widths; the flow flags do not apply)")
  parser.add_argument("--g_variant", choices=("3x3", "3x3-1x1"), default="3x3", help="BPLF's g")
  parser.add_argument("--peer_models", type=lambda text: text.split(","), default=["glow", "bplf"],
                      help="peer suite: flaxflow models compared with their PyTorch peers")
  parser.add_argument("--conv_sizes", type=int_tuple, default=(),
                      help="conv suite: only the models of these image heights (e.g. 28); all "
                           "when empty (the GAN layers are always timed)")
  parser.add_argument("--levels", type=positive_int, default=3)
  parser.add_argument("--steps", type=positive_int, default=8, help="flow steps per level (K)")
  parser.add_argument("--width", type=positive_int, default=128)
  parser.add_argument("--image_shape", type=int_tuple, default=(32, 32, 3), help="H,W,C")
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--batch_size", type=positive_int, default=32)
  parser.add_argument("--gradient", choices=GRADIENT_MODES, default="save_products")
  parser.add_argument("--gradients", type=_gradient_modes, default=["plain", "save_products"],
                      help="gradient suite: the modes compared, the first being the reference")
  parser.add_argument("--scan_unroll", type=positive_int, default=1,
                      help="flow steps per scan iteration (K unrolls a level fully)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype of the coupling networks (log-dets, loss: float32)")
  parser.add_argument("--warmup_steps", type=positive_int, default=2)
  parser.add_argument("--timed_steps", type=positive_int, default=10,
                      help="steps timed (per round in the peer suite)")
  parser.add_argument("--rounds", type=positive_int, default=3,
                      help="peer and gradient suites: alternating rounds of the steps compared")
  parser.add_argument("--system_malloc", action="store_true",
                      help="keep the C library's default allocator settings (for comparison)")
  parser.add_argument("--profile_dir", default=None,
                      help="also trace the timed steps with jax.profiler into this folder and "
                           "print the time of each XLA operation (single and depth suites)")
  parser.add_argument("--output", default=None, help="write all records to this JSON file")
  args = parser.parse_args(argv)
  if args.model in GAN_CONFIGS and args.suite != "single":
    parser.error(f"--model={args.model}: only --suite=single times a GAN")
  return args


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  if not args.system_malloc:
    host_memory.retain_freed_memory()
  matmul = {"matmul_2048_float32_flops_per_second": benchmarking.matmul_flops_per_second(),
            "device": jax.devices()[0].device_kind, "cores": os.cpu_count()}
  print(json.dumps(matmul), flush=True)
  suites = {"peer": peer_suite, "depth": depth_suite, "conv": conv_suite,
            "gradient": gradient_suite, "single": lambda args: [run_jax(args)]}
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

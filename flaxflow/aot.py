"""Compile a train step for a TPU topology or a GPU target without devices, and read what it needs.

JAX compiles ahead of time for devices this host does not have: `jax.experimental.topologies`
hands the real TPU compiler (PyPI `libtpu`) compile-only devices of any slice, and the CUDA
plugin the same for GPUs described by a `GpuTargetConfigProto`. `compile_train_step` builds a
config's task, the mesh over those devices, the abstract train state and batch, and compiles
the very step training runs (`flaxflow.loop.jit_train_step`); `StepReport` gives per chip its
memory against the chip's, the FLOPs, and a roofline lower bound of the step time.

Targets are written `tpu:<chip>:<topology>` (`tpu:v5e:2x4`, `tpu:v4:2x2x2`) and
`gpu:<model>:<count>` (`gpu:h100:8`). Each chip's published figures (memory, bandwidth, peak
FLOP/s, and for a GPU what its compiler needs) are in `targets/<platform>_<chip>.json`, each
figure with its source.

The memory and the verdict are the compiler's: the TPU compiler refuses a program that does not
fit the chip's memory, as the hardware would (a result, `fits=False`, not an error), while the
GPU compiler does not check, so there the peak is compared with the memory JAX's allocator gives
a program. XLA's own cost analysis counts a loop body once whatever its trip count, so the FLOPs
and bytes are counted here on the compiled program (`program_costs`), each loop body times its
trip count: the per-chip figures of the partitioned program, collectives and all.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import topologies

from flaxflow import checkpointing, loop, parallel, tasks

TARGETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")
_GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip's published figures (`targets/<platform>_<name>.json`)."""
  name: str
  platform: str  # "tpu" or "gpu"
  description: str
  memory_bytes: int
  usable_memory_bytes: int  # What a JAX program may use: all of a TPU's, JAX's pool on a GPU.
  memory_bandwidth: float  # Bytes per second.
  peak_flops: Dict[str, float]  # FLOP/s of matrix products by compute dtype.
  figures: Dict[str, Any]  # The whole file, sources included.


def known_chips(platform: str) -> List[str]:
  prefix = f"{platform}_"
  return sorted(name[len(prefix):-len(".json")] for name in os.listdir(TARGETS_DIR)
                if name.startswith(prefix) and name.endswith(".json"))


def load_chip(platform: str, name: str) -> Chip:
  with open(os.path.join(TARGETS_DIR, f"{platform}_{name}.json")) as file:
    figures = json.load(file)
  value = lambda field: figures[field]["value"]
  memory = int(value("memory_bytes"))
  fraction = value("usable_memory_fraction") if "usable_memory_fraction" in figures else 1.0
  return Chip(name=name, platform=platform, description=figures["name"], memory_bytes=memory,
              usable_memory_bytes=int(memory * fraction),
              memory_bandwidth=float(value("memory_bandwidth_bytes_per_second")),
              peak_flops=dict(value("peak_flops_per_second")), figures=figures)


@dataclasses.dataclass(frozen=True)
class Target:
  """Where a step is compiled for: `chips` chips of one kind, as `text` names them."""
  text: str
  chip: Chip
  topology: str  # TPU: the slice's shape ("2x4"); GPU: the number of GPUs.


def parse_target(text: str) -> Target:
  """`tpu:<chip>:<topology>` or `gpu:<model>:<count>`, or a one-line error naming `--target`."""
  parts = text.split(":")
  expected = (f"--target={text}: expected tpu:<chip>:<topology> (chips: "
              f"{', '.join(known_chips('tpu'))}) or gpu:<model>:<count> (models: "
              f"{', '.join(known_chips('gpu'))}), e.g. tpu:v5e:2x4 or gpu:h100:8")
  if len(parts) != 3 or parts[0] not in ("tpu", "gpu"):
    raise ValueError(expected)
  platform, name, topology = parts
  if name.lower() not in known_chips(platform):
    raise ValueError(f"--target={text}: unknown {platform} {name!r}; {expected.split(': ', 1)[1]}")
  if platform == "gpu" and not (topology.isdigit() and int(topology) > 0):
    raise ValueError(f"--target={text}: the GPU count {topology!r} must be a positive integer")
  if platform == "tpu" and not re.fullmatch(r"\d+(x\d+){1,2}", topology):
    raise ValueError(f"--target={text}: the topology {topology!r} must be chips per axis, "
                     "e.g. 2x4 (v5e, v6e) or 2x2x2 (v4, v5p)")
  return Target(text=text, chip=load_chip(platform, name.lower()), topology=topology)


def gpu_target_config(chip: Chip) -> str:
  """The `GpuTargetConfigProto` text of a GPU chip, from its figures."""
  value = lambda field: chip.figures[field]["value"]
  major, minor = value("cuda_compute_capability")
  limit_x, limit_y, limit_z = value("block_dim_limit")
  dnn_major, dnn_minor, dnn_patch = value("cudnn_version")
  device_info = {
      "threads_per_block_limit": value("threads_per_block_limit"),
      "threads_per_warp": value("threads_per_warp"),
      "shared_memory_per_block": value("shared_memory_per_block"),
      "shared_memory_per_block_optin": value("shared_memory_per_block_optin"),
      "shared_memory_per_core": value("shared_memory_per_multiprocessor"),
      "threads_per_core_limit": value("threads_per_multiprocessor_limit"),
      "core_count": value("streaming_multiprocessors"),
      "fpus_per_core": value("fp32_units_per_multiprocessor"),
      "block_dim_limit_x": limit_x, "block_dim_limit_y": limit_y, "block_dim_limit_z": limit_z,
      "memory_bandwidth": int(chip.memory_bandwidth),
      "l2_cache_size": value("l2_cache_bytes"),
      "clock_rate_ghz": value("clock_rate_ghz"),
      "device_memory_size": chip.memory_bytes,
      "registers_per_core_limit": value("registers_per_multiprocessor_limit"),
      "registers_per_block_limit": value("registers_per_block_limit"),
  }
  fields = "\n".join(f"  {name}: {number}" for name, number in device_info.items())
  return (f"gpu_device_info {{\n  cuda_compute_capability {{ major: {major} minor: {minor} }}\n"
          f"{fields}\n}}\nplatform_name: \"CUDA\"\n"
          f"dnn_version_info {{ major: {dnn_major} minor: {dnn_minor} patch: {dnn_patch} }}\n"
          f"device_description_str: \"{value('device_kind')}\"\n")


def target_devices(target: Target) -> list:
  """Compile-only devices of `target` (needs `libtpu` for a TPU, `jax-cuda12-plugin` for a GPU)."""
  try:
    if target.chip.platform == "tpu":
      # libtpu locks the machine's TPU for the first process that loads it; compile-only devices
      # touch no chip, so compiling processes (and a training one) may load it side by side.
      os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
      # Off a TPU VM libtpu finds no workers' addresses and logs an error that is none here.
      os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
      return topologies.get_topology_desc(f"{target.chip.name}:{target.topology}", "tpu").devices
    return topologies.get_topology_desc(
        "cuda", "cuda", target_config=gpu_target_config(target.chip),
        topology=f"1x1x{target.topology}").devices
  except (RuntimeError, NotImplementedError, ValueError) as error:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ValueError(f"--target={target.text}: the compiler knows no such "
                     f"{target.chip.platform} target ({first_line})") from None


# --- What a compiled program does, counted on its HLO text. ---

_ELEMENT_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
                  "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
                  "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3fnuz": 1,
                  "f8e5m2fnuz": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_ELEMENT_BYTES) + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")
_CALLED = re.compile(r"\b(condition|body|calls|to_apply|true_computation|false_computation)="
                     r"%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
# Instructions that move no data of their own (bookkeeping, or computations counted inside).
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while",
               "conditional", "call", "after-all", "partition-id", "replica-id", "opt-barrier",
               "add-dependency", "copy-start", "copy-done", "async-start", "async-done",
               "async-update"}
_CONTROL_OPCODES = {"while", "conditional", "call", "async-start"}


def _matching(text: str, start: int) -> int:
  """The index just past the bracket that closes the one at `start`."""
  depth = 0
  for index in range(start, len(text)):
    depth += {"(": 1, ")": -1}.get(text[index], 0)
    if depth == 0:
      return index + 1
  return len(text)


def _arrays(shape: str) -> List[Tuple[str, List[int]]]:
  return [(kind, [int(d) for d in dims.split(",") if d]) for kind, dims in _ARRAY.findall(shape)]


def shape_bytes(shape: str) -> float:
  """Bytes of an HLO shape (a tuple's elements summed), layout padding left out."""
  return sum(_ELEMENT_BYTES[kind] * math.prod(dims) for kind, dims in _arrays(shape))


@dataclasses.dataclass
class _Instruction:
  name: str
  shape: str
  opcode: str
  arguments: str  # The text between the opcode's parentheses (a constant's value).
  operands: List[str]
  attributes: str
  is_root: bool = False


def _parse_instruction(line: str) -> Optional[_Instruction]:
  match = _INSTRUCTION.match(line)
  if not match:
    return None
  name, rest = match.groups()
  end = _matching(rest, 0) if rest.startswith("(") else rest.find(" ")
  shape, rest = rest[:end], rest[end:].lstrip()
  opcode_match = re.match(r"([\w\-]+)\(", rest)
  if not opcode_match:
    return None
  open_at = opcode_match.end() - 1
  close_at = _matching(rest, open_at)
  arguments = rest[open_at + 1:close_at - 1]
  return _Instruction(name, shape, opcode_match.group(1), arguments,
                      re.findall(r"%([\w.\-]+)", arguments), rest[close_at:],
                      is_root=line.lstrip().startswith("ROOT "))


def _parse_module(hlo_text: str) -> Tuple[Dict[str, List[_Instruction]], str]:
  """The computations of an HLO module's text and the name of its entry."""
  computations, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(2)
      computations[current] = []
      entry = current if header.group(1) else entry
    elif line.startswith("}"):
      current = None
    elif current is not None:
      instruction = _parse_instruction(line)
      if instruction is not None:
        computations[current].append(instruction)
  return computations, entry


def _trip_count(instruction: _Instruction,
                computations: Dict[str, List[_Instruction]]) -> Optional[int]:
  """A while loop's trip count: XLA's `known_trip_count`, or a scan's condition `i < N`."""
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"', instruction.attributes)
  if known:
    return int(known.group(1))
  condition = re.search(r"condition=%([\w.\-]+)", instruction.attributes)
  body = computations.get(condition.group(1), []) if condition else []
  constants = {i.name: int(i.arguments) for i in body
               if i.opcode == "constant" and re.fullmatch(r"-?\d+", i.arguments)}
  for candidate in body:
    if candidate.opcode == "compare" and "direction=LT" in candidate.attributes:
      bounds = [constants[operand] for operand in candidate.operands if operand in constants]
      if len(bounds) == 1:
        return bounds[0]
  return None


# cuDNN's convolutions keep the forward convolution's dim_labels: which of the operands and
# result is the forward output and which the kernel ("result" or an operand's index).
_CUDNN_FORWARD_OUTPUT_AND_KERNEL = {"__cudnn$convBackwardInput": (0, 1),
                                    "__cudnn$convBackwardFilter": (1, "result")}


def _instruction_flops(instruction: _Instruction, shapes: Dict[str, str]) -> float:
  """FLOPs (2 per multiply-add) of a matrix product or convolution (XLA's, or cuDNN's custom
  call), else 0."""
  arrays = lambda where: _arrays(instruction.shape if where == "result" else shapes.get(
      instruction.operands[where], "") if where < len(instruction.operands) else "")
  labels = re.search(r"dim_labels=\w+_(\w+)->", instruction.attributes)
  if instruction.opcode == "convolution" or (instruction.opcode == "custom-call" and labels):
    target = re.search(r'custom_call_target="([^"]+)"', instruction.attributes)
    output, kernel = _CUDNN_FORWARD_OUTPUT_AND_KERNEL.get(target and target.group(1),
                                                          ("result", 1))
    output, kernel = arrays(output), arrays(kernel)
    if not labels or not output or not kernel:
      return 0.0
    per_output = math.prod(size for label, size in zip(labels.group(1), kernel[0][1])
                           if label == "i" or label.isdigit())
    return 2.0 * math.prod(output[0][1]) * per_output
  if instruction.opcode != "dot":
    return 0.0
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instruction.attributes)
  output, lhs = arrays("result"), arrays(0)
  if not contracting or not output or not lhs:
    return 0.0
  axes = [int(axis) for axis in contracting.group(1).split(",") if axis]
  return 2.0 * math.prod(output[0][1]) * math.prod(lhs[0][1][axis] for axis in axes)


@dataclasses.dataclass(frozen=True)
class ProgramCosts:
  """Per chip and step: matrix-product and convolution FLOPs, and an estimate of the bytes read
  and written to memory (each top-level operation's operands and result: fused operations
  count once), every loop body times its trip count. `loops_without_trip_count` were counted
  once (their trip count was not found), so the figures are then too low. What the compiler
  had to generate code for: `loop_trip_counts` (one per while loop, 0 where not found) and
  `fusions`, the fused operations of the program, each counted once whatever its trips."""
  flops: float
  bytes_accessed: float
  loops_without_trip_count: int
  loop_trip_counts: Tuple[int, ...] = ()
  fusions: int = 0


_SLICING = {"dynamic-slice", "slice", "gather"}


def _fused_root_and_parameters(instruction: _Instruction,
                               computations: Dict[str, List[_Instruction]]):
  """A fusion's computation: its root, its parameters by number, their users, the shapes."""
  called = re.search(r"calls=%([\w.\-]+)", instruction.attributes)
  body = computations.get(called.group(1), []) if called else []
  parameters = {int(i.arguments): i for i in body if i.opcode == "parameter"}
  users = {}
  for user in body:
    for operand in user.operands:
      users.setdefault(operand, []).append(user)
  root = next((i for i in body if i.is_root), body[-1] if body else None)
  return root, parameters, users, {i.name: i.shape for i in body}


def _instruction_bytes(instruction: _Instruction, shapes: Dict[str, str],
                       computations: Dict[str, List[_Instruction]]) -> float:
  """Bytes one top-level operation reads and writes. As XLA's cost model counts them: an
  operand that is only sliced reads the slices, and a dynamic-update-slice done in place (a scan
  writing one step into its stacked buffer) reads and writes the update, not the buffer."""
  if (instruction.opcode in _NO_TRAFFIC
      or 'custom_call_target="AllocateBuffer"' in instruction.attributes):
    return 0.0
  operand_bytes = [shape_bytes(shapes.get(operand, "")) for operand in instruction.operands]
  if instruction.opcode == "dynamic-update-slice":
    return 2.0 * operand_bytes[1]
  if instruction.opcode in _SLICING:
    return 2.0 * shape_bytes(instruction.shape)
  if instruction.opcode != "fusion":
    return shape_bytes(instruction.shape) + sum(operand_bytes)
  root, parameters, users, fused_shapes = _fused_root_and_parameters(instruction, computations)
  in_place = root is not None and root.opcode == "dynamic-update-slice"
  written = (shape_bytes(fused_shapes.get(root.operands[1], "")) if in_place
             else shape_bytes(instruction.shape))
  read = 0.0
  for number, size in enumerate(operand_bytes):
    parameter = parameters.get(number)
    readers = users.get(parameter.name, []) if parameter else []
    if in_place and readers == [root] and root.operands[0] == parameter.name:
      continue  # The buffer updated in place.
    if readers and all(r.opcode in _SLICING and r.operands[0] == parameter.name for r in readers):
      read += sum(shape_bytes(r.shape) for r in readers)
    else:
      read += size
  return read + written


def program_costs(hlo_text: str) -> ProgramCosts:
  """`ProgramCosts` of a compiled module's text (`compiled.as_text()`)."""
  computations, entry = _parse_module(hlo_text)
  multiplicity = {name: 0.0 for name in computations}
  controls = {entry}
  trip_counts = []

  def visit(name: str, times: float) -> None:
    multiplicity[name] += times
    for instruction in computations.get(name, []):
      called = _CALLED.findall(instruction.attributes)
      for branches in _BRANCHES.findall(instruction.attributes):
        called += [("branch", branch) for branch in re.findall(r"%([\w.\-]+)", branches)]
      if not called:
        continue
      factor = 1
      if instruction.opcode == "while":
        trips = _trip_count(instruction, computations)
        trip_counts.append(trips or 0)
        factor = trips or 1
      for role, callee in called:
        if callee not in computations:
          continue
        if instruction.opcode in _CONTROL_OPCODES and role != "to_apply":
          controls.add(callee)
        visit(callee, times * factor)

  visit(entry, 1.0)
  flops = bytes_accessed = 0.0
  fusions = 0
  for name, instructions in computations.items():
    times = multiplicity[name]
    if not times:
      continue
    fusions += sum(instruction.opcode == "fusion" for instruction in instructions)
    shapes = {instruction.name: instruction.shape for instruction in instructions}
    flops += times * sum(_instruction_flops(i, shapes) for i in instructions)
    if name in controls:
      bytes_accessed += times * sum(_instruction_bytes(i, shapes, computations)
                                    for i in instructions)
  return ProgramCosts(flops=flops, bytes_accessed=bytes_accessed,
                      loops_without_trip_count=trip_counts.count(0),
                      loop_trip_counts=tuple(trip_counts), fusions=fusions)


# --- The train step of a config, compiled for a target. ---

@dataclasses.dataclass
class StepReport:
  """What the compiled step needs per chip, as `launch.compile` reports it."""
  target: str
  chip: str
  chips: int
  per_chip_batch: int
  global_batch: int
  fits: bool
  memory_bytes_per_chip: int
  peak_bytes_per_chip: Optional[int]  # None where the compiler refused the program.
  argument_bytes: Optional[int] = None
  output_bytes: Optional[int] = None
  alias_bytes: Optional[int] = None
  temp_bytes: Optional[int] = None
  # What a TPU compiler's refusal says the temporaries may take (less than the chip's memory).
  refusal_limit_bytes: Optional[int] = None
  flops_per_chip_per_step: Optional[float] = None
  bytes_accessed_per_chip_per_step: Optional[float] = None
  loops_without_trip_count: int = 0
  loop_trip_counts: Tuple[int, ...] = ()  # Of the compiled program's while loops.
  fusions: int = 0  # Fused operations in the compiled program.
  compile_seconds: float = 0.0  # Tracing, lowering and XLA's compilation, wall time.
  compile_cpu_seconds: float = 0.0  # The same in CPU time of this process.
  lower_cpu_seconds: float = 0.0  # The part of it before XLA: tracing and lowering.
  compiler_message: str = ""
  roofline: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def as_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def roofline(flops: float, bytes_accessed: float, chip: Chip, dtype: str,
             per_chip_batch: int) -> Dict[str, Any]:
  """An estimate, not a measurement: the step can take no less than its FLOPs at the chip's
  peak for `dtype` nor its bytes at the chip's memory bandwidth (the larger of the two), so
  the images per second per chip can be no more than `per_chip_batch` over that time."""
  peak = chip.peak_flops.get(dtype, chip.peak_flops["float32"])
  compute_seconds, memory_seconds = flops / peak, bytes_accessed / chip.memory_bandwidth
  seconds = max(compute_seconds, memory_seconds)
  return {"estimate": "roofline lower bound of the step time from the chip's published peak and "
                      "bandwidth; real steps are slower",
          "compute_seconds": compute_seconds, "memory_seconds": memory_seconds,
          "step_seconds_lower_bound": seconds,
          "bound_by": "compute" if compute_seconds >= memory_seconds else "memory",
          "images_per_second_per_chip_upper_bound": per_chip_batch / seconds if seconds else None}


def _out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


_REFUSAL = re.compile(r"HLO temporaries \(([0-9.]+)([KMGT])\)(?: exceeds available HBM "
                      r"\(([0-9.]+)([KMGT])\))?")


def _binary_size(number: str, unit: str) -> int:
  return int(float(number) * 1024 ** ("KMGT".index(unit) + 1))


def refused_memory(message: str) -> Tuple[Optional[int], Optional[int]]:
  """The temporaries a TPU compiler's refusal says the program needed and the memory it says
  they may take ("... the total memory required for HLO temporaries (23.74G) exceeds available
  HBM (15.75G)", binary units), each None where the message does not say."""
  match = _REFUSAL.search(message)
  if not match:
    return None, None
  needed, limit = _binary_size(*match.group(1, 2)), None
  if match.group(3):
    limit = _binary_size(*match.group(3, 4))
  return needed, limit


def _example_batch(image_shape: Sequence[int], num_classes: int) -> Dict[str, np.ndarray]:
  """One batch with every class (what a family that reads the training split first sees)."""
  count = max(num_classes, 1)
  return {"image": np.zeros((count, *image_shape), np.uint8),
          "label": np.arange(count, dtype=np.int32) % count}


def _abstract_batch(image_shape: Sequence[int], global_batch: int,
                    mesh: jax.sharding.Mesh) -> Dict[str, jax.ShapeDtypeStruct]:
  sharding = parallel.batch_sharding(mesh)
  return {"image": jax.ShapeDtypeStruct((global_batch, *image_shape), jnp.uint8,
                                        sharding=sharding),
          "label": jax.ShapeDtypeStruct((global_batch,), jnp.int32, sharding=sharding)}


def lower_config(config: ml_collections.ConfigDict, global_batch: int,
                 mesh: jax.sharding.Mesh) -> jax.stages.Lowered:
  """`config`'s train step (`loop.jit_train_step`) at `global_batch`, lowered on `mesh` from
  the abstract train state and batch: nothing runs, no device is touched."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.batch_size = global_batch
    # Evaluation is not compiled here; only its divisibility over the devices is checked.
    config.eval_batch_size = -(-config.eval_batch_size // mesh.size) * mesh.size
  image_shape = tuple(config.model.image_shape)
  num_classes = config.model.get("num_classes", 0)
  task = tasks.family_of(config).create_task(
      config, mesh, image_shape=image_shape,
      class_names=[f"class {label}" for label in range(num_classes)],
      train_batches=lambda: [_example_batch(image_shape, num_classes)])
  batch = _abstract_batch(image_shape, global_batch, mesh)
  state = checkpointing.abstract_state(task.init_state, parallel.replicated_sharding(mesh), batch,
                                       jax.random.PRNGKey(0))
  return loop.jit_train_step(task, mesh, config.seed).lower(state, batch)


def check_config(config: ml_collections.ConfigDict) -> None:
  """The fields training checks, before anything is compiled."""
  loop.check_config(config)
  tasks.check_config(config)


def check_per_chip_batch(per_chip_batch: int) -> None:
  if per_chip_batch < 1:
    raise ValueError(f"--per_chip_batch={per_chip_batch}: expected a positive integer")


def compile_train_step(config: ml_collections.ConfigDict, target: Target,
                       per_chip_batch: int,
                       devices: Optional[list] = None) -> StepReport:
  """`config`'s train step compiled for `target` at `per_chip_batch` images per chip."""
  check_per_chip_batch(per_chip_batch)
  devices = target_devices(target) if devices is None else devices
  mesh = parallel.make_mesh(devices)
  chip = target.chip
  report = StepReport(target=target.text, chip=chip.description, chips=mesh.size,
                      per_chip_batch=per_chip_batch, global_batch=per_chip_batch * mesh.size,
                      fits=False, memory_bytes_per_chip=chip.usable_memory_bytes,
                      peak_bytes_per_chip=None)
  start, start_cpu = time.perf_counter(), time.process_time()
  lowered = lower_config(config, report.global_batch, mesh)
  report.lower_cpu_seconds = time.process_time() - start_cpu
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as error:
    if not _out_of_memory(error):
      raise
    report.compiler_message = str(error).strip().splitlines()[0]
    report.temp_bytes, report.refusal_limit_bytes = refused_memory(report.compiler_message)
  report.compile_seconds = time.perf_counter() - start
  report.compile_cpu_seconds = time.process_time() - start_cpu
  if report.compiler_message:
    return report
  memory = compiled.memory_analysis()
  for name in ("argument", "output", "alias", "temp"):
    setattr(report, f"{name}_bytes", int(getattr(memory, f"{name}_size_in_bytes")))
  report.peak_bytes_per_chip = (report.argument_bytes + report.output_bytes + report.temp_bytes
                                - report.alias_bytes)
  # The TPU compiler has checked the program against the chip's memory; the GPU's has not.
  report.fits = chip.platform == "tpu" or report.peak_bytes_per_chip <= chip.usable_memory_bytes
  costs = program_costs(compiled.as_text())
  report.flops_per_chip_per_step = costs.flops
  report.bytes_accessed_per_chip_per_step = costs.bytes_accessed
  report.loops_without_trip_count = costs.loops_without_trip_count
  report.loop_trip_counts, report.fusions = costs.loop_trip_counts, costs.fusions
  report.roofline = roofline(costs.flops, costs.bytes_accessed, chip,
                             str(config.model.get("dtype", "float32")), per_chip_batch)
  return report


def max_per_chip_batch(compile_at: Callable[[int], StepReport], first: StepReport,
                       limit: int = 1 << 16,
                       refusals_are_cheap: bool = False) -> Tuple[int, List[StepReport]]:
  """The largest per-chip batch whose step fits, searched by compiling from the report `first`
  (at most `limit`), and every probe's report.

  The peak memory of a step grows about linearly with its batch, so each next probe is where
  the line through the two nearest probes meets the chip's memory, kept strictly inside the
  bracket of the largest batch that fits and the smallest that does not (and halving or doubling
  where the line is not known); it ends when the two are neighbours. A line through small
  batches can miss a little (a fixed part of the peak, a compiler that rematerializes near its
  limit) and then point past the bracket's edge at every probe, which would creep down one
  batch per compile: a probe that would fall in the outer quarter of a closed bracket is its
  middle instead, so each probe removes at least a quarter of it. 0: even one image does not
  fit.

  `refusals_are_cheap`: the compiler refuses a program that does not fit before it generates
  any code (a TPU's: a refusal takes seconds, a compile that fits minutes), and says how much
  it would have needed. Then the search spends refusals to save compiles: from one probe it
  first goes past the memory (where the probe's temporaries per image would need four times the
  room it leaves), takes the refusals' figures as points of the line, probes one batch above the
  line's answer before the answer itself, and guards the upper side of a bracket by an eighth
  only (refusals cost seconds, each compile that fits minutes). With an accurate line the
  largest batch costs one compile that fits.
  """
  probes: Dict[int, StepReport] = {}
  fits_up_to, fails_from = 0, limit + 1
  report = first
  while True:
    probes[report.per_chip_batch] = report
    if report.fits:
      fits_up_to = report.per_chip_batch
    else:
      fails_from = report.per_chip_batch
    if fails_from - fits_up_to <= 1:
      return fits_up_to, [probes[batch] for batch in sorted(probes)]
    report = compile_at(_next_probe(probes, fits_up_to, fails_from, refusals_are_cheap))


def _peaks(probes: Dict[int, StepReport]) -> List[Tuple[int, float, int]]:
  """(batch, peak bytes, chip memory) of every probe whose peak is known: compiled, or refused
  with the temporaries it needed (then the rest of the peak is taken from a compiled probe).

  A step that fits with a peak over the chip's memory is left out: a TPU compiler rematerializes
  to fit near its limit and reuses buffers the sum does not see, so there the peak no longer
  grows with the batch (MNIST BPLF on v5e: 16.02 GiB at 1,570 and at 1,571 images per chip)."""
  compiled = [report for report in probes.values() if report.peak_bytes_per_chip]
  fixed = next((report.peak_bytes_per_chip - report.temp_bytes for report in compiled
                if report.temp_bytes is not None), None)
  peaks = []
  for batch, report in probes.items():
    memory = report.memory_bytes_per_chip
    if report.peak_bytes_per_chip:
      if not (report.fits and report.peak_bytes_per_chip > memory):
        peaks.append((batch, report.peak_bytes_per_chip, memory))
    elif report.temp_bytes is not None and fixed is not None:
      peaks.append((batch, fixed + report.temp_bytes, memory))
  return sorted(peaks)


def _refusals(probes: Dict[int, StepReport]) -> List[Tuple[int, int, int]]:
  """(batch, temporaries needed, their limit) of every refusal that names both."""
  return sorted((batch, report.temp_bytes, report.refusal_limit_bytes)
                for batch, report in probes.items()
                if report.temp_bytes is not None and report.refusal_limit_bytes is not None)


def _line(probes: Dict[int, StepReport], fits_up_to: int) -> Optional[int]:
  """The batch where the peak's line meets the chip's memory, or None where no line is known.

  The line runs through the lowest and the highest refusal where there are two, each's
  temporaries against the limit it names: a refusal gives what the compiler still needs after
  rematerializing, the measure its verdict compares, and the two furthest apart are the least
  thrown off by the message's rounding (0.01 GiB, about one image of MNIST BPLF). Otherwise
  through the two probes nearest the largest batch that fits."""
  refused = _refusals(probes)
  if len(refused) >= 2:
    points = [refused[0], refused[-1]]
  else:
    measured = _peaks(probes)
    points = sorted(sorted(measured, key=lambda probe: abs(probe[0] - fits_up_to))[:2])
  if len(points) < 2:
    return None
  (b1, p1, memory), (b2, p2, _) = points
  return int(b1 + (memory - p1) * (b2 - b1) / (p2 - p1)) if p2 > p1 else None


def _next_probe(probes: Dict[int, StepReport], fits_up_to: int, fails_from: int,
                refusals_are_cheap: bool = False) -> int:
  """The next batch to compile: `max_per_chip_batch`'s rule."""
  closed = fails_from in probes
  width = fails_from - fits_up_to
  refusals = _refusals(probes) if refusals_are_cheap else []
  # The lowest two refusals asking for the same temporaries: the compiler's rematerialization
  # floor, just over its limit (BPLF 3x3-1x1 on v5e-8: 15.77G from 359 images down), where
  # the refusals' line points one batch under the last refusal every time.
  floor = len(refusals) >= 2 and refusals[0][1] >= refusals[1][1]
  # From above by an eighth where refusals are cheap, not at all where their own line guides
  # (its error is the messages' rounding), by a quarter from below and elsewhere.
  lowest = width // 4
  highest = (width // 4 if not refusals_are_cheap else
             0 if len(refusals) >= 2 and not floor else width // 8)
  line = None if floor else _line(probes, fits_up_to)
  # A line that ends under a batch known to fit says nothing of the limit above it (the
  # compiler rematerializes there): from there on, up as if no line were known.
  guess = line if line is not None and (closed or line >= fits_up_to) else None
  if closed and (len(refusals) == 1 or floor):
    # A refusal costs seconds: one more, an eighth down, gives the refusals' own line or
    # leaves the floor.
    guess = fails_from - max(highest, 1)
  elif guess is None and refusals_are_cheap and fits_up_to and not closed:
    # Past the memory, where the temporaries per image would need four times the room left.
    report = probes[fits_up_to]
    room = report.memory_bytes_per_chip - report.peak_bytes_per_chip
    per_image = (report.temp_bytes or report.peak_bytes_per_chip) / fits_up_to
    guess = fits_up_to + max(fits_up_to, int(4 * room / per_image))
  elif guess is None:
    guess = fits_up_to * 2 if fits_up_to else fails_from // 2
  elif refusals_are_cheap and guess + 1 not in probes:
    guess += 1
  if closed:
    # Each probe narrows the bracket by a part of its width, and a line at or past a refused
    # batch (a late refusal, after code generation, names no temporaries) is wrong there: both
    # give way to the middle. But the line's own answer, once the batch above it is refused, is
    # the compile that may end the search.
    confirmed = refusals_are_cheap and line is not None and line + 1 == fails_from
    if not (fits_up_to + lowest <= guess <= fails_from - max(highest, 1) or confirmed):
      guess = (fits_up_to + fails_from) // 2
  return min(max(guess, fits_up_to + 1), fails_from - 1)

"""Measurements of the jitted train step (throughput, compile time, memory, achieved FLOP/s) and of
single convolution layers (the products path of `flaxflow.conv` against lax's, in and out of a
scan).

Each number comes from the step itself: wall time around `block_until_ready`, XLA's buffer
assignment (`memory_analysis`) for its memory, and two FLOP counts. XLA's cost analysis counts
the body of a loop once, whatever its trip count, so for flows whose steps run under
`lax.scan` it reports about 1/K of the work; the achieved FLOP/s therefore use the matrix-product
FLOPs counted on the step's jaxpr, where every scan body counts `length` times. Products and
convolutions are nearly all of a flow's arithmetic; XLA's figure is reported beside it.
"""

import collections
import contextlib
import functools
import glob
import gzip
import json
import os
import re
import statistics
import time
from typing import Any, Dict, List, Mapping, Sequence

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections
import numpy as np

from jax import lax

from flaxflow import conv, loop, models, parallel, tasks
from flaxflow.launch.configs import common
from flaxflow.tasks import flow

Array = jax.Array


def _timed(function, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(function(*args))
  return time.perf_counter() - start


def matmul_flops_per_second(size: int = 2048, repeats: int = 10, dtype: Any = jnp.float32) -> float:
  """The machine's FLOP/s on a `size` x `size` matrix product (median of `repeats`)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
  matmul = jax.jit(jnp.dot)
  jax.block_until_ready(matmul(a, b))
  seconds = statistics.median(_timed(matmul, a, b) for _ in range(repeats))
  return 2.0 * size ** 3 / seconds


def _memory(compiled, gradient_bytes: int) -> Dict[str, int]:
  """XLA's buffer sizes of the step, their peak, and the part of it that is not parameter-sized.

  The arguments (train state and batch) and one gradient of the parameters grow with the
  parameter count whatever the backward pass does; what is left of the peak is activations and
  other temporaries, the memory that recomputing gradients keep flat in depth.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:
    return {}
  sizes = {name: int(getattr(analysis, f"{name}_size_in_bytes", 0))
           for name in ("argument", "output", "temp", "alias", "generated_code")}
  sizes["peak"] = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
  sizes["peak_beyond_state_and_gradient"] = sizes["peak"] - sizes["argument"] - gradient_bytes
  return sizes


def _product_flops(equation) -> float:
  """FLOPs (2 per multiply-add) of one dot_general or convolution equation, else 0."""
  name = equation.primitive.name
  if name not in ("dot_general", "conv_general_dilated"):
    return 0.0
  lhs, rhs = (variable.aval.shape for variable in equation.invars[:2])
  out_size = np.prod(equation.outvars[0].aval.shape, dtype=np.float64)
  if name == "dot_general":
    (lhs_contracting, _), _ = equation.params["dimension_numbers"]
    return 2.0 * out_size * np.prod([lhs[axis] for axis in lhs_contracting], dtype=np.float64)
  kernel_spec = equation.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) axes.
  per_output = np.prod([rhs[axis] for axis in kernel_spec[1:]], dtype=np.float64)
  return 2.0 * out_size * per_output


def product_flops(jaxpr) -> float:
  """Matrix-product and convolution FLOPs of a jaxpr, counting a scan body `length` times.

  A `cond` counts its most expensive branch; other nested jaxprs (jit, remat, custom
  derivatives) count once.
  """
  total = 0.0
  for equation in jaxpr.eqns:
    total += _product_flops(equation)
    nested = [product_flops(sub) for sub in jax_core.jaxprs_in_params(equation.params)]
    if not nested:
      continue
    if equation.primitive.name == "cond":
      total += max(nested)
    else:
      total += sum(nested) * equation.params.get("length", 1)
  return total


def _xla_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX returns one dict per computation.
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def random_batch(image_shape: Sequence[int], num_classes: int, batch_size: int,
                 seed: int = 0) -> Dict[str, Array]:
  """Random uint8 images; labels that cycle through every class (IF-GAN needs each one's
  average face), shuffled."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(batch_size) % max(num_classes, 1)).astype(np.int32)
  return {"image": jnp.asarray(rng.integers(0, 256, (batch_size, *image_shape), np.uint8)),
          "label": jnp.asarray(labels)}


class CompiledTrainStep:
  """One train step, compiled, with its state and a fixed batch: timed step by step.

  The step is the one training runs (`flaxflow.loop.jit_train_step` of `task`, on this host's
  first device); keeping it compiled lets a benchmark time it in rounds, interleaved with another
  framework's, so that both see the same load. `flow_train_step` and `task_train_step` build one.
  """

  def __init__(self, description: Mapping[str, Any], task: loop.Task, batch: Dict[str, Array],
               *, seed: int = 0):
    self.model_config = dict(description)
    self.batch, self.batch_size = batch, len(batch["label"])
    self.state = jax.jit(task.init_state)(batch, jax.random.PRNGKey(seed))
    step = loop.jit_train_step(task, parallel.make_mesh(jax.devices()[:1]), seed)
    self.flops_per_step = product_flops(jax.make_jaxpr(step)(self.state, self.batch).jaxpr)
    start = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch).compile()
    self.compile_seconds = time.perf_counter() - start
    self.metrics = None

  def run(self, num_steps: int) -> List[float]:
    """Runs `num_steps` steps; the wall time of each, up to its results being ready."""
    seconds = []
    for _ in range(num_steps):
      start = time.perf_counter()
      self.state, self.metrics = self.compiled(self.state, self.batch)
      jax.block_until_ready(self.metrics)
      seconds.append(time.perf_counter() - start)
    return seconds

  def record(self, step_seconds: Sequence[float]) -> Dict[str, Any]:
    """The measurements, with throughput from the median of `step_seconds`."""
    median = statistics.median(step_seconds)
    params = self.state.params
    return {
        "model": self.model_config, "batch_size": self.batch_size,
        "parameters": int(sum(np.prod(p.shape) for p in jax.tree.leaves(params))),
        "device": jax.devices()[0].device_kind, "compile_seconds": self.compile_seconds,
        "step_seconds": list(step_seconds), "median_step_seconds": median,
        "images_per_second": self.batch_size / median, "flops_per_step": self.flops_per_step,
        "xla_cost_analysis_flops_per_step": _xla_flops(self.compiled),
        "achieved_flops_per_second": self.flops_per_step / median,
        "memory_bytes": _memory(self.compiled, sum(p.nbytes for p in jax.tree.leaves(params))),
        "final_loss": float(self.metrics["loss"]),
    }


def flow_train_step(model_config: Mapping[str, Any], *, batch_size: int,
                    seed: int = 0) -> CompiledTrainStep:
  """A flow's (or the classifier's) step as training runs it (`flaxflow.tasks.flow.FlowTask`:
  forward, log-det, backward, Adam) on random 8-bit images, without the EMA."""
  config = common.base_config()
  config.update(n_bits=8, class_loss_weight=0.3, ema_decay=0.0, num_steps=1, seed=seed,
                batch_size=batch_size)
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-4, warmup_steps=0, schedule="constant",
      grad_clip_norm=50.0, b1=0.9, b2=0.999, eps=1e-8))
  config.model = ml_collections.ConfigDict(dict(model_config))
  batch = random_batch(model_config["image_shape"], model_config.get("num_classes", 0),
                       batch_size, seed)
  task = flow.FlowTask(config, models.create(model_config), parallel.make_mesh(jax.devices()[:1]))
  return CompiledTrainStep(model_config, task, batch, seed=seed)


def task_train_step(config: ml_collections.ConfigDict, *, batch_size: int,
                    seed: int = 0) -> CompiledTrainStep:
  """The step of `config`'s task (any family: `flaxflow.tasks`), as `launch.train` runs it, on
  random images of `config.model.image_shape`; a family that reads the training split first
  (IF-GAN's average faces) reads the one random batch."""
  image_shape = tuple(config.model.image_shape)
  num_classes = config.model.get("num_classes", 0)
  batch = random_batch(image_shape, num_classes, batch_size, seed)
  task = tasks.family_of(config).create_task(
      config, parallel.make_mesh(jax.devices()[:1]), image_shape=image_shape,
      class_names=[f"class {label}" for label in range(num_classes)],
      train_batches=lambda: [jax.tree.map(np.asarray, batch)])
  return CompiledTrainStep(config.model.to_dict(), task, batch, seed=seed)


# An instruction of compiled HLO text, with the source operation it came from (op_name).
_HLO_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = [^\n]*?op_name="([^"]*)"', re.M)


def operation_profile(step: CompiledTrainStep, num_steps: int,
                      trace_dir: str) -> List[Dict[str, Any]]:
  """Time per train step of each XLA operation of `step`, from a profiler trace.

  Runs `num_steps` steps under `jax.profiler`, writing the trace to `trace_dir` (TensorBoard's
  profile plugin or Perfetto open it), and sums the trace's spans of each instruction of the
  compiled module: a fusion, product, copy or loop. Each comes with `source`, the JAX operation
  it was lowered from (e.g. ``.../g/Conv_1/dot_general``), and `kind`, its name without the
  numeric suffix. XLA:CPU runs independent operations at once on different cores, so the times
  can add up to more than the step's wall time. Sorted by time, longest first.
  """
  sources = dict(_HLO_INSTRUCTION.findall(step.compiled.as_text()))
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    step.run(num_steps)
  traces = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  with gzip.open(max(traces, key=os.path.getmtime)) as file:
    trace = json.load(file)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  microseconds, calls = collections.Counter(), collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in sources:
      microseconds[event["name"]] += event.get("dur", 0)
      calls[event["name"]] += 1
  return [{"operation": name, "kind": re.sub(r"\.\d+$", "", name), "source": sources[name],
           "milliseconds_per_step": total / 1e3 / num_steps,
           "calls_per_step": calls[name] / num_steps}
          for name, total in microseconds.most_common()]


# Applications of a layer per `lax.scan` when timing it inside one: a flow level's K steps.
SCAN_LENGTH = 4


def _equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs nested in it (scan bodies, remat, jit)."""
  for equation in jaxpr.eqns:
    yield equation
    for nested in jax_core.jaxprs_in_params(equation.params):
      yield from _equations(nested)


def model_convolutions(model_config: Mapping[str, Any], batch_size: int) -> List[Dict[str, Any]]:
  """Every distinct convolution of a model's log-likelihood, in lax's terms.

  Each is a dict as `time_convolution` takes it, found in the jaxpr traced with lax's
  convolutions (scan bodies included).
  """
  model = models.create(model_config)
  x = jax.ShapeDtypeStruct((batch_size, *model_config["image_shape"]), jnp.float32)
  labels = (jax.ShapeDtypeStruct((batch_size,), jnp.int32)
            if model_config.get("num_classes") else None)
  with conv.lax_convolutions():
    variables = jax.eval_shape(functools.partial(model.init, method="log_prob"),
                               jax.random.key(0), x, labels)
    jaxpr = jax.make_jaxpr(functools.partial(model.apply, method="log_prob"))(
        variables, x, labels).jaxpr
  layers = []
  for equation in _equations(jaxpr):
    if equation.primitive.name != "conv_general_dilated":
      continue
    layer = dict(input_shape=list(equation.invars[0].aval.shape),
                 kernel_shape=list(equation.invars[1].aval.shape),
                 strides=list(equation.params["window_strides"]),
                 padding=[list(pad) for pad in equation.params["padding"]],
                 input_dilation=list(equation.params["lhs_dilation"]))
    if layer not in layers:
      layers.append(layer)
  return layers


def time_convolution(layer: Mapping[str, Any], *, products: bool, in_scan: bool,
                     repeats: int = 5, seed: int = 0) -> Dict[str, float]:
  """Median seconds of one forward and backward pass of a convolution layer, and its compile time.

  ``layer``: ``input_shape`` (NHWC), ``kernel_shape`` (HWIO), ``strides``, ``padding`` ((low,
  high) per axis) and ``input_dilation`` (a transposed convolution where > 1). ``products``
  picks `flaxflow.conv`'s products path, else lax's convolution; ``in_scan`` applies the layer
  SCAN_LENGTH times inside a `lax.scan` (one kernel per trip, as a flow level's steps do) and
  reports the time per application.
  """
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(layer["input_shape"]), jnp.float32)
  trips = SCAN_LENGTH if in_scan else 1
  kernels = jnp.asarray(rng.standard_normal((trips, *layer["kernel_shape"])), jnp.float32)

  def convolve(x, kernel):
    return conv.conv_general_dilated(x, kernel, layer["strides"], layer["padding"],
                                     layer["input_dilation"],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))

  upstream = jnp.asarray(rng.standard_normal(jax.eval_shape(convolve, x, kernels[0]).shape),
                         jnp.float32)

  def loss(x, kernels):
    if not in_scan:
      return jnp.sum(convolve(x, kernels[0]) * upstream)
    body = lambda total, kernel: (total + jnp.sum(convolve(x, kernel) * upstream), None)
    return lax.scan(body, jnp.zeros((), jnp.float32), kernels)[0]

  with contextlib.nullcontext() if products else conv.lax_convolutions():
    start = time.perf_counter()
    step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernels).compile()
    compile_seconds = time.perf_counter() - start
  jax.block_until_ready(step(x, kernels))
  seconds = statistics.median(_timed(step, x, kernels) for _ in range(repeats))
  return {"seconds": seconds / trips, "compile_seconds": compile_seconds}

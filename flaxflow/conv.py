"""Convolutions that train fast on XLA:CPU: drop-ins for `flax.linen.Conv` and `ConvTranspose`.

XLA:CPU is weak at convolutions. Its kernel gradient runs as another convolution whose window
is the whole image; its strided and transposed (input-dilated) convolutions are several times
slower than the same arithmetic as matrix products; and inside a `while` loop (a `lax.scan` over
a flow's steps) a convolution's backward pass runs tens of times slower than outside one. Matrix
products have none of these problems, so on CPU every 2-D convolution of the flows and the GANs
is written here as zero-padded windows of its input and matrix products:

* One axis at a time, each kernel tap reads the input at a fixed offset. A stride s splits the
  input into s phases (pixels s*u + b); tap t reads phase (t - low) mod s at offset
  floor((t - low) / s), so a strided convolution is a stride-1 one over the phases. An input
  dilation d (a transposed convolution) splits the *output* into d phases (pixels d*q + r), each a
  stride-1 convolution of the input with the taps that land on it; the phases are interleaved.
* For each output phase, the taps' windows are joined along channels and multiplied by the
  matching kernel rows in one product (narrow input: ``concat_taps(window(x)) @ kernel``), or
  the input is multiplied by every tap's kernel side by side and the windows of that product are
  summed (narrow output: ``sum_taps(window(x @ kernel_taps))``), whichever copies fewer values.

Autodiff turns these into the same patterns (windows become pads, concatenates become splits),
so the backward pass is again matrix products over batch and pixels, and forward-mode autodiff
(`jacfwd`) works as for any JAX function. On other backends (GPU, TPU) the native convolution
runs: their kernels have none of XLA:CPU's weaknesses. The backend is the one the traced function
is compiled for (`flaxflow.parallel.traced_platform`: a train step's mesh), not this host's, so
that a step compiled on a CPU host for a TPU (`flaxflow.aot`) is the TPU's program.

The choice was measured (`python -m launch.benchmark --suite=conv`; figures in launch/RESULTS.md,
forward and backward of one layer on a 2-core CPU). Inside a `lax.scan` the products win on
every layer: 12-15x for BPLF's square 3x3, 16-40x for the GANs' strided and transposed layers,
1.5-60x for the others. Outside a loop they win 13x for the 4x4 stride-2 transposed convolution
and 1.3x for a 7x7 stem, while lax's convolution is 1.4-2.3x faster for square 64->64 3x3s and
1.4-1.7x for strided layers; there the products are still within 1.5x of torch.nn. A
convolution cannot tell whether it is being traced inside a loop, so every covered convolution
takes the path that is never the slow one. Kernel dilation and feature groups, which no model
uses, keep lax's path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Any, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from flaxflow import parallel

Array = jax.Array

# flax.linen's layout for 2-D inputs: NHWC activations, HWIO kernels.
_NHWC_DIMENSION_NUMBERS = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


# Read when a function is traced: `lax_convolutions` switches it for benchmarks' A/B runs.
_products_on_cpu = True


@contextlib.contextmanager
def lax_convolutions():
  """Within this block, functions traced use lax's convolution on every backend.

  For comparisons only: functions already traced (and jitted) keep the path they were traced
  with, so trace the function under comparison inside the block.
  """
  global _products_on_cpu
  previous, _products_on_cpu = _products_on_cpu, False
  try:
    yield
  finally:
    _products_on_cpu = previous


@dataclasses.dataclass(frozen=True)
class _AxisTerm:
  """Along one axis: kernel tap `tap` reads input phase `phase` at `offset` from the output."""
  tap: int
  phase: int
  offset: int


@dataclasses.dataclass(frozen=True)
class _AxisPlan:
  """One spatial axis of a convolution as stride-1 correlations of input phases.

  Output pixel ``num_output_phases * q + r`` is ``sum(x_phase[q + offset] * kernel[tap])`` over
  the terms of output phase r, where ``x_phase[u] = x[num_input_phases * u + phase]`` and reads
  outside the input are zero.
  """
  output_size: int
  num_input_phases: int
  output_phases: Tuple[Tuple[int, Tuple[_AxisTerm, ...]], ...]  # (phase size, its terms)


def _axis_plan(size: int, kernel: int, stride: int, input_dilation: int,
               padding: Tuple[int, int]) -> Optional[_AxisPlan]:
  """The plan of one axis, or None when it is both strided and input-dilated."""
  low, high = padding
  output_size = ((size - 1) * input_dilation + 1 + low + high - kernel) // stride + 1
  if input_dilation == 1:
    terms = tuple(_AxisTerm(t, (t - low) % stride, (t - low) // stride) for t in range(kernel))
    return _AxisPlan(output_size, stride, ((output_size, terms),))
  if stride != 1:
    return None
  # Output pixel y reads dilated pixel y + t - low, a real input pixel when it is a multiple
  # of the dilation.
  phases = []
  for r in range(input_dilation):
    terms = tuple(_AxisTerm(t, 0, (r + t - low) // input_dilation) for t in range(kernel)
                  if (r + t - low) % input_dilation == 0)
    phases.append((max(0, -(-(output_size - r) // input_dilation)), terms))
  return _AxisPlan(output_size, 1, tuple(phases))


def _window(x: Array, offsets: Sequence[int], sizes: Sequence[int]) -> Array:
  """x[:, o_h : o_h + n_h, o_w : o_w + n_w], zero where that falls outside x."""
  zero = jnp.zeros((), x.dtype)
  (offset_h, offset_w), (size_h, size_w) = offsets, sizes
  return lax.pad(x, zero, ((0, 0, 0), (-offset_h, offset_h + size_h - x.shape[1], 0),
                           (-offset_w, offset_w + size_w - x.shape[2], 0), (0, 0, 0)))


def _input_phases(x: Array, phases_h: int, phases_w: int) -> List[Array]:
  """x's pixels (phases_h * u + b_h, phases_w * v + b_w) for every (b_h, b_w), row-major.

  Joined along channels and split, so that their gradient is one concatenate (slicing each
  phase would transpose into one zero-padded full-size tensor per phase).
  """
  if phases_h == phases_w == 1:
    return [x]
  batch, height, width, channels = x.shape
  padded_h, padded_w = -(-height // phases_h) * phases_h, -(-width // phases_w) * phases_w
  x = _window(x, (0, 0), (padded_h, padded_w))
  x = x.reshape(batch, padded_h // phases_h, phases_h, padded_w // phases_w, phases_w, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, padded_h // phases_h, padded_w // phases_w, -1)
  return jnp.split(x, phases_h * phases_w, axis=-1)


def _interleave(phases: Sequence[Array], phases_h: int, phases_w: int,
                size_h: int, size_w: int) -> Array:
  """The output whose pixel (phases_h * q + r_h, phases_w * p + r_w) is phases[r_h, r_w][q, p]."""
  if phases_h == phases_w == 1:
    return phases[0]
  rows, cols = -(-size_h // phases_h), -(-size_w // phases_w)
  full = [_window(phase, (0, 0), (rows, cols)) for phase in phases]
  batch, channels = full[0].shape[0], full[0].shape[-1]
  out = jnp.stack(full, axis=3).reshape(batch, rows, cols, phases_h, phases_w, channels)
  out = out.transpose(0, 1, 3, 2, 4, 5).reshape(batch, rows * phases_h, cols * phases_w, channels)
  return out[:, :size_h, :size_w]


def _matmul(a: Array, b: Array, contract_b: int, precision: Any, accumulation: Any) -> Array:
  """a (..., k) times b with b's axis ``contract_b`` of size k, as one 2-D product: XLA:CPU
  runs a product with batch-like leading axes as a slower kernel than the same product of a
  (pixels, k) matrix."""
  product = lax.dot_general(a.reshape(-1, a.shape[-1]), b, (((1,), (contract_b,)), ((), ())),
                            precision=precision, preferred_element_type=accumulation)
  return product.reshape(*a.shape[:-1], -1)


def _conv_as_products(x: Array, kernel: Array, plan_h: _AxisPlan, plan_w: _AxisPlan,
                      precision: Any, out_dtype: Any) -> Array:
  """The convolution that `plan_h` and `plan_w` describe, as windows and matrix products."""
  in_channels, out_channels = kernel.shape[2:]
  phases_h, phases_w = plan_h.num_input_phases, plan_w.num_input_phases
  inputs = _input_phases(x, phases_h, phases_w)
  # Products accumulate in at least float32, as lax's convolution does for bfloat16.
  accumulation = jnp.promote_types(out_dtype, jnp.float32)
  output_phases = list(itertools.product(plan_h.output_phases, plan_w.output_phases))
  terms_of = [[(term_h, term_w) for term_h in terms_h for term_w in terms_w]
              for (_, terms_h), (_, terms_w) in output_phases]
  narrow_input = in_channels <= out_channels
  if not narrow_input:
    # Every tap's output channels side by side, once per input phase; the kernel as
    # (in_channels, taps * out_channels) keeps its gradient one product.
    all_terms = sorted({pair for terms in terms_of for pair in terms},
                       key=lambda pair: (pair[0].tap, pair[1].tap))
    per_tap = {}
    for phase_index, phase_input in enumerate(inputs):
      taps = [(h, w) for h, w in all_terms if h.phase * phases_w + w.phase == phase_index]
      if not taps:
        continue
      stacked = jnp.concatenate([kernel[h.tap, w.tap] for h, w in taps], axis=1)
      products = jnp.split(_matmul(phase_input, stacked, 0, precision, accumulation),
                           len(taps), axis=-1)
      per_tap.update(zip(taps, products))

  outputs = []
  for ((size_h, _), (size_w, _)), terms in zip(output_phases, terms_of):
    if not terms or size_h == 0 or size_w == 0:
      outputs.append(jnp.zeros((x.shape[0], size_h, size_w, out_channels), accumulation))
      continue
    sizes = (size_h, size_w)
    if narrow_input:
      patches = jnp.concatenate(
          [_window(inputs[h.phase * phases_w + w.phase], (h.offset, w.offset), sizes)
           for h, w in terms], axis=-1)
      # The kernel rows as (out_channels, taps * in_channels): autodiff's kernel gradient is then
      # the product in the orientation XLA:CPU runs faster (up to 2.4x for these shapes).
      rows = jnp.concatenate([kernel[h.tap, w.tap].T for h, w in terms], axis=1)
      outputs.append(_matmul(patches, rows, 1, precision, accumulation))
    else:
      outputs.append(sum(_window(per_tap[h, w], (h.offset, w.offset), sizes) for h, w in terms))
  out = _interleave(outputs, len(plan_h.output_phases), len(plan_w.output_phases),
                    plan_h.output_size, plan_w.output_size)
  return out.astype(out_dtype)


def _explicit_padding(padding: Any, in_hw: Sequence[int], kernel_hw: Sequence[int],
                      strides: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
  return tuple((int(low), int(high)) for low, high in padding)


def products_plan(lhs_shape: Sequence[int], rhs_shape: Sequence[int],
                  window_strides: Sequence[int], padding: Any,
                  lhs_dilation: Optional[Sequence[int]] = None,
                  rhs_dilation: Optional[Sequence[int]] = None, dimension_numbers: Any = None,
                  feature_group_count: int = 1,
                  batch_group_count: int = 1) -> Optional[Tuple[_AxisPlan, _AxisPlan]]:
  """The per-axis plans of a convolution written as products, None where lax's path is kept.

  Covered: 2-D NHWC/HWIO (flax's layout), any strides, input dilation (transposed convolution)
  on unstrided axes, any padding; not covered: kernel dilation, feature or batch groups.
  """
  if len(lhs_shape) != 4 or len(rhs_shape) != 4:
    return None
  if lax.conv_dimension_numbers(lhs_shape, rhs_shape,
                                dimension_numbers) != _NHWC_DIMENSION_NUMBERS:
    return None
  lhs_dilation = tuple(lhs_dilation or (1, 1))
  if (any(d != 1 for d in (rhs_dilation or (1, 1))) or feature_group_count != 1
      or batch_group_count != 1):
    return None
  if isinstance(padding, str) and any(d != 1 for d in lhs_dilation):
    return None  # lax itself rejects this combination; let it say so.
  in_hw, kernel_hw = tuple(lhs_shape[1:3]), tuple(rhs_shape[:2])
  pads = _explicit_padding(padding, in_hw, kernel_hw, window_strides)
  plans = tuple(_axis_plan(*axis) for axis in zip(in_hw, kernel_hw, window_strides,
                                                   lhs_dilation, pads))
  if any(plan is None or plan.output_size <= 0 for plan in plans):
    return None
  return plans


def conv_general_dilated(lhs: Array, rhs: Array, window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Optional[Sequence[int]] = None,
                         rhs_dilation: Optional[Sequence[int]] = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> Array:
  """`lax.conv_general_dilated`, as matrix products on CPU wherever `products_plan` applies (CPU:
  the platform being traced for, `flaxflow.parallel.traced_platform`)."""
  plans = None
  if _products_on_cpu and parallel.traced_platform() == "cpu":
    plans = products_plan(lhs.shape, rhs.shape, window_strides, padding, lhs_dilation,
                          rhs_dilation, dimension_numbers, feature_group_count,
                          batch_group_count)
  if plans is None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  if lhs.shape[-1] != rhs.shape[2]:
    raise ValueError(f"the input has {lhs.shape[-1]} channels but the kernel of shape "
                     f"{rhs.shape} expects {rhs.shape[2]}")
  out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
  return _conv_as_products(lhs, rhs, *plans, precision, out_dtype)


def conv_transpose(x: Array, kernel: Array, strides: Sequence[int], padding: Any,
                   precision: Any = None, preferred_element_type: Any = None) -> Array:
  """`lax.conv_transpose` of NHWC ``x`` with an HWIO ``kernel`` (``transpose_kernel=False``).

  A transposed convolution is an input-dilated one, padded as lax.conv_transpose pads it for
  a ``padding`` of "SAME", "VALID" or explicit (low, high) pairs.
  """
  if isinstance(padding, str):
    pads = tuple(_transpose_padding(k, s, padding.upper())
                 for k, s in zip(kernel.shape[:2], strides))
  else:
    pads = tuple((int(low), int(high)) for low, high in padding)
  return conv_general_dilated(x, kernel, (1, 1), pads, tuple(strides),
                              dimension_numbers=_NHWC_DIMENSION_NUMBERS, precision=precision,
                              preferred_element_type=preferred_element_type)


def _transpose_padding(kernel: int, stride: int, padding: str) -> Tuple[int, int]:
  """lax.conv_transpose's padding of one axis of the dilated input, for SAME or VALID."""
  if padding == "SAME":
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    low = kernel - 1
  else:
    raise ValueError(f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}")
  return low, total - low


class Conv(nn.Conv):
  """`flax.linen.Conv` (same attributes, parameters and initialisers), fast on CPU.

  ``Conv(features, (3, 3), padding="SAME", dtype=..., param_dtype=...)`` creates ``kernel``
  ``(kh, kw, in, features)`` and ``bias`` ``(features,)`` exactly as `flax.linen.Conv` does, so
  the two are interchangeable in a module tree and in a checkpoint.
  """

  conv_general_dilated: Any = conv_general_dilated


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` for NHWC images (same parameters and result), fast on CPU.

  Attributes are flax's: ``features``, ``kernel_size``, ``strides``, ``padding`` ("SAME",
  "VALID" or (low, high) pairs), ``use_bias``, ``dtype``, ``param_dtype``, ``precision``,
  ``kernel_init``, ``bias_init``; the kernel is (kh, kw, in, features), not transposed.
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if x.ndim != 4:
      raise ValueError(f"ConvTranspose needs NHWC images, got shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv_transpose(x, kernel, self.strides, self.padding, self.precision)
    return y if bias is None else y + bias

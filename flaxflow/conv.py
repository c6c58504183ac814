"""A drop-in `flax.linen.Conv` whose stride-1 convolutions train fast on XLA:CPU.

XLA:CPU runs the kernel gradient of a convolution as another convolution whose window is the
whole image, several times slower than the forward pass; a 1x1 convolution is also slower as a
convolution than as the matrix product it is. Coupling networks are all such layers, and their
3x3 convolutions have one narrow side (a few image channels against a hidden width of 128 or
more). Here a k x k convolution is written as k*k zero-padded shifted copies of its narrower
tensor and one matrix product:

* narrow input: ``concat_taps(shift(x)) @ kernel``;
* narrow output: ``z = x @ kernel`` with every tap's output channels side by side, then the sum
  of the k*k shifted slices of ``z``.

Ordinary autodiff of that expression turns the backward pass into the same two patterns (the
kernel gradient becomes one matrix product over batch and pixels), so forward, input gradient
and kernel gradient are all large matrix products, and forward-mode autodiff (``jacfwd``) works
as for any JAX function. Convolutions whose two sides are both wide, and every case this path
does not cover (strides, dilations, groups, other layouts or paddings), go to
`lax.conv_general_dilated` unchanged, and so does every convolution on other backends (GPU,
TPU), whose convolution kernels have none of XLA:CPU's weaknesses.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# The taps of the narrower side are copied k*k times; past this many times the wider side's
# channels those copies cost more memory traffic than XLA's own convolution.
MAX_TAPS_TO_WIDE_RATIO = 4

# flax.linen.Conv's layout for 2-D inputs: NHWC activations, HWIO kernels.
_NHWC_DIMENSION_NUMBERS = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _same_padding(kernel_size: int) -> Tuple[int, int]:
  """lax's SAME padding of one spatial axis at stride 1: the extra pixel goes after."""
  return (kernel_size - 1) // 2, kernel_size // 2


def _tap_offsets(kernel_height: int, kernel_width: int) -> list:
  """(dh, dw) of every kernel tap, row-major: tap (i, j) reads pixel (h + dh, w + dw)."""
  top, left = _same_padding(kernel_height)[0], _same_padding(kernel_width)[0]
  return [(i - top, j - left) for i in range(kernel_height) for j in range(kernel_width)]


def _shift(x: Array, dh: int, dw: int) -> Array:
  """out[:, h, w] = x[:, h + dh, w + dw], zero where that falls outside the image."""
  zero = jnp.zeros((), x.dtype)
  no_pad = ((0, 0, 0),) * (x.ndim - 3)
  return lax.pad(x, zero, ((0, 0, 0), (-dh, dh, 0), (-dw, dw, 0)) + no_pad)


def _matmul(a: Array, b: Array, contract_b: int, precision: Any, accumulation: Any) -> Array:
  """a (m, k) times b with b's axis ``contract_b`` of size k."""
  return lax.dot_general(a, b, (((1,), (contract_b,)), ((), ())), precision=precision,
                         preferred_element_type=accumulation)


def _shifted_copies_conv(x: Array, kernel: Array, precision: Any, out_dtype: Any) -> Array:
  """The SAME stride-1 convolution, shifting copies of the narrower of input and output.

  Written for autodiff: the products are 2-D and the taps are joined by `concatenate` or
  separated by `split`, each the other's transpose, so the backward pass is again one product
  per operand and one concatenate or split (slicing per tap would transpose into one
  zero-padded full-size tensor per tap).
  """
  batch, height, width, in_channels = x.shape
  kh, kw, _, out_channels = kernel.shape
  pixels = batch * height * width
  offsets = _tap_offsets(kh, kw)
  # Products accumulate in at least float32, as lax's convolution does for bfloat16.
  accumulation = jnp.promote_types(out_dtype, jnp.float32)
  if in_channels <= out_channels:
    patches = jnp.concatenate([_shift(x, dh, dw) for dh, dw in offsets], axis=-1)
    out = _matmul(patches.reshape(pixels, -1), kernel.reshape(-1, out_channels), 0, precision,
                  accumulation)
    return out.reshape(batch, height, width, out_channels).astype(out_dtype)
  # The kernel as (taps * out_channels, in_channels) makes autodiff's kernel gradient a
  # (taps * out_channels, in_channels) product, the faster orientation on XLA:CPU.
  per_tap_kernel = kernel.transpose(0, 1, 3, 2).reshape(-1, in_channels)
  per_tap_out = _matmul(x.reshape(pixels, in_channels), per_tap_kernel, 1, precision,
                        accumulation).reshape(batch, height, width, -1)
  taps = jnp.split(per_tap_out, len(offsets), axis=-1)
  out = sum(_shift(tap, dh, dw) for tap, (dh, dw) in zip(taps, offsets))
  return out.astype(out_dtype)


def shifts_pay_off(kernel_shape: Sequence[int]) -> bool:
  """Whether `conv2d_same` takes the shifted-copies path for an HWIO ``kernel_shape``."""
  kh, kw, in_channels, out_channels = kernel_shape
  narrow, wide = sorted((in_channels, out_channels))
  return kh * kw * narrow <= MAX_TAPS_TO_WIDE_RATIO * wide


def conv2d_same(x: Array, kernel: Array, precision: Any = None,
                preferred_element_type: Any = None) -> Array:
  """Stride-1 SAME convolution of NHWC ``x`` with an HWIO ``kernel``, as lax computes it.

  Args:
    x: (batch, height, width, in_channels).
    kernel: (kernel_height, kernel_width, in_channels, out_channels).
    precision: passed to the matrix products (or to lax's convolution).
    preferred_element_type: the output dtype; that of ``x`` and ``kernel`` when None.

  Returns:
    (batch, height, width, out_channels).
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d_same needs an NHWC x and an HWIO kernel, got shapes {x.shape} "
                     f"and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"x has {x.shape[-1]} channels but the kernel of shape {kernel.shape} "
                     f"expects {kernel.shape[2]}")
  out_dtype = preferred_element_type or jnp.result_type(x, kernel)
  if jax.default_backend() != "cpu" or not shifts_pay_off(kernel.shape):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=_NHWC_DIMENSION_NUMBERS,
                                    precision=precision, preferred_element_type=out_dtype)
  return _shifted_copies_conv(x, kernel, precision, out_dtype)


def _is_same_padding(padding: Any, kernel_hw: Sequence[int]) -> bool:
  if isinstance(padding, str):
    return padding.upper() == "SAME"
  return [tuple(p) for p in padding] == [_same_padding(k) for k in kernel_hw]


def conv_general_dilated(lhs: Array, rhs: Array, window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Optional[Sequence[int]] = None,
                         rhs_dilation: Optional[Sequence[int]] = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> Array:
  """`lax.conv_general_dilated`, through `conv2d_same` where that applies.

  That is: 2-D, NHWC/HWIO (flax's layout), unit strides and dilations, no groups, SAME
  padding. Everything else is passed to lax as is.
  """
  kernel_hw = rhs.shape[:2]
  fast = (lhs.ndim == 4 and rhs.ndim == 4
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
          == _NHWC_DIMENSION_NUMBERS
          and all(s == 1 for s in window_strides)
          and all(d == 1 for d in (lhs_dilation or (1, 1)))
          and all(d == 1 for d in (rhs_dilation or (1, 1)))
          and feature_group_count == 1 and batch_group_count == 1
          and _is_same_padding(padding, kernel_hw))
  if fast:
    return conv2d_same(lhs, rhs, precision, preferred_element_type)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)


class Conv(nn.Conv):
  """`flax.linen.Conv` (same attributes, parameters and initialisers) using `conv2d_same`.

  ``Conv(features, (3, 3), padding="SAME", dtype=..., param_dtype=...)`` creates ``kernel``
  ``(kh, kw, in, features)`` and ``bias`` ``(features,)`` exactly as `flax.linen.Conv` does, so
  the two are interchangeable in a module tree and in a checkpoint.
  """

  conv_general_dilated: Any = conv_general_dilated

"""BPLF's bi-parallel linear transformation (eq. 3-6 to 3-8 of the BPLF paper).

The channels are split into parts x_1 .. x_K and each is transformed linearly,
y_k = s_k * x_k + mu_k with (s_k, mu_k) = g_k(x_{k-1}, cond), where x_0 is a learned
per-channel default. The Jacobian is block lower triangular with diagonal blocks diag(s_k), so
log|det| = sum_k sum log s_k. Forward, every x_{k-1} is known, so the K networks have no data
dependency on each other and run in parallel; the inverse recovers x_1, then x_2 from x_1, etc.

g_1 reads only x_0 and the condition, not the data: without a condition its output is the same
for every example, and with a one-hot label it is one of num_classes maps. It is therefore
computed once (or once per class) and broadcast, not once per example; with K = 2 that is half
of the layer's arithmetic. Under data parallelism the classes are split over the chips, so that no
chip repeats another's work (`_first_g`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from flaxflow import parallel
from flaxflow.bijectors.base import Bijector, sum_except_batch, zero_log_det
from flaxflow.bijectors.nets import CouplingNet

Array = jax.Array

# The two g of the BPLF ablation (its Table 3): three 3x3 convolutions, or 3x3, 1x1, 3x3.
G_KERNEL_SIZES = {"3x3": (3, 3, 3), "3x3-1x1": (3, 1, 3)}


def _split_over_chips(rows: Array, chips: int) -> Array:
  """`rows` (leading axis) split over the traced mesh's data axis when it has several chips."""
  if chips == 1:
    return rows
  return jax.lax.with_sharding_constraint(rows, PartitionSpec(parallel.DATA_AXIS))


def _gathered(rows: Array, chips: int) -> Array:
  """`rows` whole on every chip (an all-gather of what `_split_over_chips` split), so that each
  chip picks its own examples' rows from them."""
  if chips == 1:
    return rows
  return jax.lax.with_sharding_constraint(rows, PartitionSpec())


class BiParallelLinear(Bijector):
  """Splits channels into ``num_parts`` parts and applies y_k = s_k * x_k + mu_k (eq. 3-6).

  With C channels, the first C % num_parts parts get one channel more than the others.
  log s_k = log_scale_bound * tanh(raw / log_scale_bound) keeps every scale within
  exp(+-log_scale_bound) (as in Dynamic Linear Flow) so that no step can blow up or collapse.
  ``cond`` (one-hot or spatial) is fed to every g_k (eq. 3-8).
  With ``one_hot_cond``, a rank-2 ``cond`` is taken as a one-hot label: g_1 runs once per class
  and each example gets ``sum_c cond[c] * g_1(x_0, e_c)``, which is g_1(x_0, cond) for one-hot
  rows (for other rows, that mixture of the class outputs).

  Attributes:
    num_parts: K >= 2, the number of channel parts.
    width: hidden channels of every g_k.
    g_variant: "3x3" (three 3x3 convolutions, the paper's final choice) or "3x3-1x1".
    log_scale_bound: bound on |log s_k|.
    dtype: computation dtype of the g_k (e.g. jnp.bfloat16); scales and log-dets stay float32.
    one_hot_cond: a rank-2 ``cond`` is a one-hot label (see above).
  """

  num_parts: int = 2
  width: int = 512
  g_variant: str = "3x3"
  log_scale_bound: float = 2.0
  dtype: Any = jnp.float32
  one_hot_cond: bool = False

  def _split(self, x: Array) -> Sequence[Array]:
    channels = x.shape[-1]
    if self.num_parts < 2:
      raise ValueError(f"BiParallelLinear needs num_parts >= 2, got {self.num_parts}")
    if channels < self.num_parts:
      raise ValueError(f"BiParallelLinear(num_parts={self.num_parts}) needs at least "
                       f"{self.num_parts} channels, got an input of shape {x.shape}")
    return jnp.array_split(x, self.num_parts, axis=-1)

  @nn.compact
  def _shift_and_log_scale(self, k: int, previous: Optional[Array], part_shape: Tuple[int, ...],
                           cond: Optional[Array]) -> Tuple[Array, Array]:
    """(mu_k, log s_k) = g_k(x_{k-1}, cond) for 0-based part k; ``previous`` is None for x_0."""
    if self.g_variant not in G_KERNEL_SIZES:
      raise ValueError(f"g_variant must be one of {sorted(G_KERNEL_SIZES)}, "
                       f"got {self.g_variant!r}")
    g = CouplingNet(2 * part_shape[-1], self.width, G_KERNEL_SIZES[self.g_variant],
                    dtype=self.dtype, name=f"g_{k + 1}")
    if previous is None:
      # Random, not zero: a zero x_0 with zero biases gives ReLU(0) everywhere in g_1, whose
      # gradient is zero, so g_1 could never learn anything but a constant.
      x0 = self.param("x0", nn.initializers.normal(1.0), (part_shape[-1],), jnp.float32)
      h = self._first_g(g, x0, part_shape, cond)
    else:
      h = g(previous, cond)
    shift, raw_log_scale = jnp.split(h, 2, axis=-1)
    bound = self.log_scale_bound
    return shift, bound * jnp.tanh(raw_log_scale / bound)

  def _first_g(self, g: CouplingNet, x0: Array, part_shape: Tuple[int, ...],
               cond: Optional[Array]) -> Array:
    """g_1(x_0, cond) for every example, computed once per distinct condition.

    Under data parallelism over N chips (`parallel.traced_mesh_axis_size`), a class's map
    computed on every chip would repeat the same work N times: the classes are split over the
    chips instead (padded to a multiple of N), so each chip computes ceil(C / N) of them. Where a
    chip's own examples are fewer than that, g_1 runs per example instead.
    """
    batch = part_shape[0]
    if cond is None:
      h = g(jnp.broadcast_to(x0, (1,) + tuple(part_shape[1:])))
      return jnp.broadcast_to(h, (batch,) + h.shape[1:])
    chips = parallel.traced_mesh_axis_size()
    num_classes = cond.shape[-1]
    classes_per_chip = -(-num_classes // chips)
    if cond.ndim != 2 or not self.one_hot_cond or batch // chips < classes_per_chip:
      return g(jnp.broadcast_to(x0, part_shape), cond)
    rows = classes_per_chip * chips  # Rows past num_classes: zero conditions, never picked.
    per_class = _gathered(g(
        _split_over_chips(jnp.broadcast_to(x0, (rows,) + tuple(part_shape[1:])), chips),
        _split_over_chips(jnp.eye(rows, num_classes, dtype=cond.dtype), chips)), chips)
    picks = jnp.pad(cond.astype(per_class.dtype), ((0, 0), (0, rows - num_classes)))
    # HIGHEST: a one-hot row must pick its class's map exactly, also where float32 products
    # default to bfloat16 passes (TPU).
    return jnp.einsum("bc,c...->b...", picks, per_class, precision=jax.lax.Precision.HIGHEST)

  def forward_and_log_det(self, x, cond=None):
    parts = self._split(x)
    log_det = zero_log_det(x)
    outputs = []
    for k, part in enumerate(parts):
      previous = parts[k - 1] if k else None
      shift, log_scale = self._shift_and_log_scale(k, previous, part.shape, cond)
      outputs.append((jnp.exp(log_scale) * part + shift).astype(x.dtype))
      log_det = log_det + sum_except_batch(log_scale)
    return jnp.concatenate(outputs, axis=-1), log_det

  def inverse_and_log_det(self, y, cond=None):
    log_det = zero_log_det(y)
    previous = None
    outputs = []
    for k, part in enumerate(self._split(y)):
      shift, log_scale = self._shift_and_log_scale(k, previous, part.shape, cond)
      previous = ((part - shift) * jnp.exp(-log_scale)).astype(y.dtype)
      outputs.append(previous)
      log_det = log_det - sum_except_batch(log_scale)
    return jnp.concatenate(outputs, axis=-1), log_det

"""The K flow steps of a level, with stacked variables, run by `jax.lax.scan`.

Scanning one step over stacked variables keeps the traced program the size of one step, so compile
time does not grow with depth. Four ways to get gradients (`gradient`):

* ``"plain"``: autodiff through the scan; every step's intermediate activations are stored.
* ``"save_products"`` (the default): `jax.checkpoint` around each step with a policy that
  stores only the outputs of matrix products and convolutions; windows, ReLUs and scales are
  recomputed from them in the backward pass. On CPU a 3x3 convolution is a product of 9 windows
  of its input (`flaxflow.conv`), which plain autodiff stores for every step and the scan first
  zero-fills and then copies into its stacked buffers; this mode stores none of that. Measured
  on CPU against "plain" (launch/RESULTS.md): 2.7-3.2x less temporary memory for BPLF and
  10-14% less for Glow at the peer sizes, at the step time of "plain" within the machine's
  noise (a few percent, either way).
* ``"remat"``: `jax.checkpoint` around each step; only each step's input is stored and the step's
  insides are recomputed in the backward pass.
* ``"reversible"``: a `jax.custom_vjp` that stores only the level's output and, walking the steps
  backwards, recomputes each step's input from its output with the step's inverse (the steps are
  bijections), so memory is flat in depth.

`scan_unroll` is `lax.scan`'s `unroll`: steps per loop iteration. Unrolling removes the loop's
per-iteration slicing of the stacked variables at the price of compile time that grows with the
steps unrolled; on a 2-core CPU K=8 unrolled was no faster at the peer sizes (launch/RESULTS.md),
so 1, which keeps compile time flat in depth, is the default.
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxflow.bijectors.base import Bijector, zero_log_det

GRADIENT_MODES = ("plain", "save_products", "remat", "reversible")
# What `jax.checkpoint` keeps of a step for its backward pass (None: nothing but its input).
_CHECKPOINT_POLICIES = {"save_products": jax.checkpoint_policies.dots_saveable, "remat": None}


class _StepCell(nn.Module):
  """Wraps one step so that `nn.scan` can carry (x, log_det) through it at initialisation."""

  make_step: Callable[[], Bijector]

  def setup(self):
    self.step = self.make_step()

  def __call__(self, carry, cond):
    x, log_det = carry
    y, step_log_det = self.step.forward_and_log_det(x, cond)
    return (y, log_det + step_log_det), None

  def forward_and_log_det(self, x, cond):
    return self.step.forward_and_log_det(x, cond)

  def inverse_and_log_det(self, y, cond):
    return self.step.inverse_and_log_det(y, cond)


def _split_integer_leaves(tree):
  """Splits a pytree into (float leaves, integer leaves) trees, each with None elsewhere."""
  is_float = lambda leaf: jnp.issubdtype(leaf.dtype, jnp.inexact)
  floats = jax.tree.map(lambda leaf: leaf if is_float(leaf) else None, tree)
  integers = jax.tree.map(lambda leaf: None if is_float(leaf) else leaf, tree)
  return floats, integers


def _merge_leaves(floats, integers):
  return jax.tree.map(lambda f, i: i if f is None else f, floats, integers,
                      is_leaf=lambda leaf: leaf is None)


def _float0_zeros(tree):
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, jax.dtypes.float0), tree)


def _scan_forward(forward, stacked, x, cond, gradient: str, unroll: int):
  def body(carry, variables):
    h, log_det = carry
    y, step_log_det = forward(variables, h, cond)
    return (y, log_det + step_log_det), None

  if gradient in _CHECKPOINT_POLICIES:
    body = jax.checkpoint(body, policy=_CHECKPOINT_POLICIES[gradient])
  (y, log_det), _ = jax.lax.scan(body, (x, zero_log_det(x)), stacked, unroll=unroll)
  return y, log_det


def _reversible_forward(forward, inverse, stacked, x, cond, unroll: int):
  """`_scan_forward` whose backward pass recomputes activations with `inverse`."""

  @jax.custom_vjp
  def run(stacked, x, cond):
    return _scan_forward(forward, stacked, x, cond, "plain", unroll)

  def run_fwd(stacked, x, cond):
    y, log_det = run(stacked, x, cond)
    return (y, log_det), (stacked, y, cond)

  def run_bwd(residuals, cotangents):
    stacked, y, cond = residuals
    y_bar, log_det_bar = cotangents
    trainable, fixed = _split_integer_leaves(stacked)

    def body(carry, step_variables):
      y, y_bar, cond_bar = carry
      step_trainable, step_fixed = step_variables
      x, _ = inverse(_merge_leaves(step_trainable, step_fixed), y, cond)
      step = lambda v, x, c: forward(_merge_leaves(v, step_fixed), x, c)
      _, step_vjp = jax.vjp(step, step_trainable, x, cond)
      trainable_bar, x_bar, step_cond_bar = step_vjp((y_bar, log_det_bar))
      cond_bar = jax.tree.map(jnp.add, cond_bar, step_cond_bar)
      return (x, x_bar, cond_bar), trainable_bar

    cond_bar = jax.tree.map(jnp.zeros_like, cond)
    (_, x_bar, cond_bar), trainable_bar = jax.lax.scan(
        body, (y, y_bar, cond_bar), (trainable, fixed), reverse=True, unroll=unroll)
    return _merge_leaves(trainable_bar, _float0_zeros(fixed)), x_bar, cond_bar

  run.defvjp(run_fwd, run_bwd)
  return run(stacked, x, cond)


class StepStack(Bijector):
  """`num_steps` flow steps made by `make_step`, applied in order; inverse in reverse order.

  Initialise through `forward_and_log_det` (the steps' data-dependent initialisation runs step by
  step on the initialisation batch).
  """

  make_step: Callable[[], Bijector]
  num_steps: int
  gradient: str = "save_products"
  scan_unroll: int = 1

  def setup(self):
    if self.gradient not in GRADIENT_MODES:
      raise ValueError(f"gradient={self.gradient!r}: expected one of {GRADIENT_MODES}")
    if self.num_steps < 1:
      raise ValueError(f"num_steps={self.num_steps}: a level needs at least one step")
    if self.scan_unroll < 1:
      raise ValueError(f"scan_unroll={self.scan_unroll}: expected a positive number of steps")
    scanned_cell = nn.scan(
        _StepCell,
        variable_axes={"params": 0, "constants": 0},
        split_rngs={"params": True},
        in_axes=nn.broadcast,
        length=self.num_steps)
    self.cells = scanned_cell(self.make_step)

  def _step_functions(self):
    cell = _StepCell(self.make_step, parent=None)  # unbound: applied functionally per step
    forward = functools.partial(cell.apply, method=_StepCell.forward_and_log_det)
    inverse = functools.partial(cell.apply, method=_StepCell.inverse_and_log_det)
    return forward, inverse

  def forward_and_log_det(self, x, cond=None):
    if self.is_initializing():
      (y, log_det), _ = self.cells((x, zero_log_det(x)), cond)
      return y, log_det
    forward, inverse = self._step_functions()
    if self.gradient == "reversible":
      return _reversible_forward(forward, inverse, self.cells.variables, x, cond, self.scan_unroll)
    return _scan_forward(forward, self.cells.variables, x, cond, self.gradient, self.scan_unroll)

  def inverse_and_log_det(self, y, cond=None):
    _, inverse = self._step_functions()

    def body(carry, variables):
      h, log_det = carry
      x, step_log_det = inverse(variables, h, cond)
      return (x, log_det + step_log_det), None

    (x, log_det), _ = jax.lax.scan(body, (y, zero_log_det(y)), self.cells.variables, reverse=True,
                                   unroll=self.scan_unroll)
    return x, log_det

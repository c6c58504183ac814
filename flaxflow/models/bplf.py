"""BPLF, the Bi-Parallel Linear Flow: steps of invertible 1x1 conv -> bi-parallel linear transform.

Class-conditional as in the paper's eq. 3-8 when `num_classes > 0`: the one-hot label is fed to
every g_k of every step (`condition_steps`) and to the priors.
"""

import functools
from typing import Any

import jax.numpy as jnp

from flaxflow.bijectors import ActNorm, BiParallelLinear, Chain, InvertibleConv1x1
from flaxflow.models.multiscale import MultiscaleFlow


def bplf_step(width: int, num_parts: int, g_variant: str, actnorm: bool, use_lu: bool,
              dtype: Any) -> Chain:
  layers = [ActNorm()] if actnorm else []
  layers += [
      InvertibleConv1x1(use_lu=use_lu),
      # The model's step condition is always None or its one-hot label.
      BiParallelLinear(width=width, num_parts=num_parts, g_variant=g_variant, dtype=dtype,
                       one_hot_cond=True),
  ]
  return Chain(layers)


class BPLF(MultiscaleFlow):
  """Multi-scale BPLF. `g_variant` picks g: three 3x3 convs ("3x3") or 3x3 & 1x1 & 3x3
  ("3x3-1x1")."""

  width: int = 512
  num_parts: int = 2
  g_variant: str = "3x3"
  actnorm: bool = False
  use_lu: bool = True
  condition_steps: bool = True
  dtype: Any = jnp.float32

  def step_factory(self):
    return functools.partial(bplf_step, self.width, self.num_parts, self.g_variant, self.actnorm,
                             self.use_lu, self.dtype)

"""Glow (Kingma & Dhariwal, 2018): steps of ActNorm -> invertible 1x1 conv -> affine coupling."""

import functools
from typing import Any

import jax.numpy as jnp

from flaxflow.bijectors import ActNorm, AffineCoupling, Chain, InvertibleConv1x1
from flaxflow.models.multiscale import MultiscaleFlow


def glow_step(width: int, additive: bool, use_lu: bool, dtype: Any) -> Chain:
  return Chain([
      ActNorm(),
      InvertibleConv1x1(use_lu=use_lu),
      AffineCoupling(width=width, additive=additive, dtype=dtype),
  ])


class Glow(MultiscaleFlow):
  """Multi-scale Glow; class-conditional priors when `num_classes > 0`."""

  width: int = 512
  additive: bool = False
  use_lu: bool = True
  dtype: Any = jnp.float32

  def step_factory(self):
    return functools.partial(glow_step, self.width, self.additive, self.use_lu, self.dtype)

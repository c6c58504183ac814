"""Invertible layers (bijectors) for normalizing flows on NHWC images."""

from flaxflow.bijectors.actnorm import ActNorm
from flaxflow.bijectors.affine_coupling import AffineCoupling
from flaxflow.bijectors.base import (Bijector, Chain, per_pixel_log_det, sum_except_batch,
                                     zero_log_det)
from flaxflow.bijectors.bi_parallel_linear import G_KERNEL_SIZES, BiParallelLinear
from flaxflow.bijectors.invconv import InvertibleConv1x1
from flaxflow.bijectors.nets import CouplingNet, ZeroConv
from flaxflow.bijectors.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "BiParallelLinear",
    "Bijector",
    "Chain",
    "CouplingNet",
    "G_KERNEL_SIZES",
    "InvertibleConv1x1",
    "Squeeze",
    "ZeroConv",
    "per_pixel_log_det",
    "sum_except_batch",
    "zero_log_det",
]

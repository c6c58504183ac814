"""The classifier paper's CNN baseline (section IV-D, its 74%): stacks of residual blocks, each a
pair of conv-norm-ReLU layers, then two dense layers to the class logits.

The paper's blocks use batch normalisation; these use group normalisation, which needs no running
statistics, so that the baseline trains through the same pure train step as the flows.
"""

from typing import Sequence, Tuple

import flax.linen as nn
import jax

from flaxflow.conv import Conv
from flaxflow.models.capabilities import ModelCapabilities

Array = jax.Array


class ResidualBlock(nn.Module):
  """relu(x' + norm(conv(relu(norm(conv(x)))))), x' = x or its 1x1 projection to `features`."""
  features: int
  groups: int = 8

  @nn.compact
  def __call__(self, x: Array) -> Array:
    groups = min(self.groups, self.features)
    h = nn.relu(nn.GroupNorm(groups)(Conv(self.features, (3, 3), padding="SAME")(x)))
    h = nn.GroupNorm(groups)(Conv(self.features, (3, 3), padding="SAME")(h))
    shortcut = x if x.shape[-1] == self.features else Conv(self.features, (1, 1))(x)
    return nn.relu(h + shortcut)


class CNNClassifier(ModelCapabilities, nn.Module):
  """Class logits of continuous images in [-0.5, 0.5): one residual block per entry of `widths`,
  halving the resolution between blocks while it is at least 2, a global average, then
  `dense_width` and the logits."""

  is_classifier = True

  image_shape: Tuple[int, int, int]
  num_classes: int = 7
  widths: Sequence[int] = (16, 32, 64, 128)
  dense_width: int = 128

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"input of shape {x.shape} does not match the model's image_shape "
                       f"{tuple(self.image_shape)}")
    h = x
    for index, width in enumerate(self.widths):
      h = ResidualBlock(width)(h)
      if index < len(self.widths) - 1 and min(h.shape[1:3]) >= 2:
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    h = nn.relu(nn.Dense(self.dense_width)(h.mean(axis=(1, 2))))
    return nn.Dense(self.num_classes)(h)

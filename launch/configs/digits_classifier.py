"""A small conditional-Glow expression classifier on the bundled 8x8 digits (CPU minutes)."""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.digits_config()
  config.model = ml_collections.ConfigDict(dict(
      name="classifier", image_shape=(8, 8, 1), num_classes=10, levels=2, steps_per_level=4,
      width=32, h_steps=2, h_width=32))
  return config

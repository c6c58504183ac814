"""Glow on CIFAR-10 as in Kingma & Dhariwal (2018): 3 levels x 32 steps, width 512. GPU or TPU."""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.accelerator_config("cifar10", num_steps=500_000)
  config.samples_per_class = 16  # Unconditional: one row of samples.
  config.model = ml_collections.ConfigDict(dict(
      name="glow", image_shape=(32, 32, 3), num_classes=0, levels=3, steps_per_level=32,
      width=512, additive=False))
  return config

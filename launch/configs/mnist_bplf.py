"""Class-conditional BPLF on MNIST (28x28, so two levels: 28 -> 14 -> 7). GPU or TPU."""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.accelerator_config("mnist", num_steps=200_000)
  config.model = ml_collections.ConfigDict(dict(
      name="bplf", image_shape=(28, 28, 1), num_classes=10, levels=2, steps_per_level=16,
      width=256, g_variant="3x3", svd_rank=ml_collections.config_dict.placeholder(int)))
  return config

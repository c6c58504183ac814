"""The CNN baseline of the classifier paper's Table I on the bundled 8x8 digits (CPU minutes),
at the steps and batch of `digits_classifier.py`."""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.digits_config()
  config.sample_every = 0
  config.model = ml_collections.ConfigDict(dict(
      name="cnn", image_shape=(8, 8, 1), num_classes=10, widths=(16, 32, 64, 128),
      dense_width=128))
  return config

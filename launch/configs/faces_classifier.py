"""A small conditional-Glow expression classifier on 32x32 synthetic faces (CPU minutes): the
default run's flow size, with h and the class loss on top. It reads every intensity, onsets
included (the default run trains on peak frames only): recognition is measured on the hard
cases too."""

import ml_collections

from flaxflow.launch.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset_options = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      name="classifier", image_shape=(32, 32, 1), num_classes=7, levels=3, steps_per_level=4,
      width=32, h_steps=2, h_width=32))
  return config

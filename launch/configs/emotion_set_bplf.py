"""Class-conditional BPLF on EmotionSet (7 expressions, grayscale), the BPLF paper's setting.

`--config=launch/configs/emotion_set_bplf.py` trains on 64x64 faces; append `:48` to the path for
the 48x48 build. Needs the built EmotionSet in `--config.data_dir` and a GPU or TPU.
"""

import ml_collections

from flaxflow.launch.configs import common

_SIZES = ("64", "48")


def get_config(image_size: str = "64") -> ml_collections.ConfigDict:
  if image_size not in _SIZES:
    raise ValueError(f"emotion_set_bplf.py:{image_size}: expected one of {', '.join(_SIZES)}")
  side = int(image_size)
  config = common.accelerator_config(f"emotion_set/{side}", num_steps=400_000)
  config.model = ml_collections.ConfigDict(dict(
      # Width 256: each step has one g per part, three 3x3 convs each, so this is already ~85M
      # parameters, about twice Glow's on CIFAR-10 (width 512 would give ~320M).
      name="bplf", image_shape=(side, side, 1), num_classes=7, levels=4, steps_per_level=16,
      width=256, g_variant="3x3",
      # The paper's best model truncates the input by SVD but gives no rank; set one to use it.
      svd_rank=ml_collections.config_dict.placeholder(int)))
  return config

"""The BPLF ablation (Table 3 rows) at the paper's scale:
`--config=launch/configs/ablation_paper.py:NAME` with NAME one of mnist, cifar10, emotion_set/64
(the default), emotion_set/48. GPU or TPU.

The model sizes follow this project's training configs for each dataset. The paper gives no SVD
rank; half the image side is this config's choice.
"""

import ml_collections

from flaxflow.launch.configs import common

# dataset: (image shape, levels, steps per level, width, training steps)
_SETTINGS = {
    "mnist": ((28, 28, 1), 2, 16, 256, 200_000),
    "cifar10": ((32, 32, 3), 3, 32, 512, 500_000),
    "emotion_set/64": ((64, 64, 1), 4, 16, 256, 400_000),
    "emotion_set/48": ((48, 48, 1), 4, 16, 256, 400_000),
}


def get_config(dataset: str = "emotion_set/64") -> ml_collections.ConfigDict:
  if dataset not in _SETTINGS:
    raise ValueError(f"ablation_paper.py:{dataset}: expected one of {', '.join(_SETTINGS)}")
  image_shape, levels, steps_per_level, width, num_steps = _SETTINGS[dataset]
  config = common.accelerator_config(dataset, num_steps)
  config.sample_every = 10_000
  config.eval_every = 10_000  # Test bits/dim for the NLL curves (launch.plot_curves, Fig. 7).
  config.model = ml_collections.ConfigDict(dict(
      name="glow", image_shape=image_shape, num_classes=0, levels=levels,
      steps_per_level=steps_per_level, width=width))
  config.svd_rank = image_shape[0] // 2
  return config

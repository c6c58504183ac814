"""The conditional-Glow expression classifier on EmotionSet 64x64 (flow-latent recognition paper).

f: 4 levels of 32 Glow steps; h: 4 conditional steps on the deepest latent; Adam at 1e-4 with a
batch of 32, as in the paper. Needs the built EmotionSet in `--config.data_dir` and a GPU or TPU.
"""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.accelerator_config("emotion_set/64", num_steps=600_000)
  config.batch_size = 32
  config.ema_decay = 0.0
  config.class_loss_weight = 0.3
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.warmup_steps = 2000
  config.sample_every = 10_000
  config.model = ml_collections.ConfigDict(dict(
      name="classifier", image_shape=(64, 64, 1), num_classes=7, levels=4, steps_per_level=32,
      width=512, h_steps=4, h_width=512))
  return config

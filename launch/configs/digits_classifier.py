"""A small conditional-Glow expression classifier on the bundled 8x8 digits (CPU minutes)."""

import ml_collections

from launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.base_config()
  config.dataset = "digits"
  config.n_bits = 4
  config.batch_size = 64
  config.eval_batch_size = 360
  config.num_steps = 1000
  config.class_loss_weight = 0.3
  config.ema_decay = 0.999
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.schedule = "cosine"
  config.checkpoint_every = 250
  config.sample_every = 250
  config.samples_per_class = 10
  config.model = ml_collections.ConfigDict(dict(
      name="classifier", image_shape=(8, 8, 1), num_classes=10, levels=2, steps_per_level=4,
      width=32, conditional_steps=2, conditional_width=32))
  return config

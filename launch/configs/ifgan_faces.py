"""IF-GAN on 32x32 synthetic faces, minutes on a 2-core CPU.

The paper's losses (weights 1, 20, 10, 1; island alpha 0.03) and optimizer (Adam, beta
(0.9, 0.99), weight decay 1e-4, learning rate x 0.9 every 10 epochs) at a CPU scale: narrow
networks, batch 32, a higher learning rate than the paper's 1e-4 so that a few epochs suffice.
`--config.model.attention=False` is the "IF-GAN w/o attention" ablation.
"""

import ml_collections

from flaxflow.launch.configs import common


def ifgan_config(dataset: str, side: int) -> ml_collections.ConfigDict:
  """The fields every IF-GAN config has, at the paper's settings where it gives them."""
  config = common.base_config()
  config.dataset = dataset
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-4, warmup_steps=0, schedule="staircase", decay_rate=0.9,
      decay_every_epochs=10, weight_decay=1e-4, grad_clip_norm=0.0, b1=0.9, b2=0.99, eps=1e-8))
  config.loss = ml_collections.ConfigDict(dict(
      adversarial="non_saturating", gan_weight=1.0, l1_weight=20.0, softmax_weight=10.0,
      island_weight=1.0, island_alpha=0.03, centre_learning_rate=0.5))
  config.samples_per_class = 4  # Inputs per class in the sample grids.
  config.model = ml_collections.ConfigDict(dict(
      name="ifgan", image_shape=(side, side, 1), num_classes=7,
      generator_widths=(32, 64, 128, 128), attention=True, attention_encoder=1,
      attention_skip=0, attention_decoder=0, discriminator_widths=(32, 64, 128),
      classifier_kind="cnn", classifier_widths=(32, 64, 128), stage_sizes=(3, 4, 23, 3),
      resnet_width=64, feature_size=64, norm="instance"))
  return config


def get_config() -> ml_collections.ConfigDict:
  config = ifgan_config("synthetic_faces/32", 32)
  config.batch_size = 32
  config.eval_batch_size = 320
  config.num_steps = 600
  config.log_every = 50
  config.checkpoint_every = 300
  config.sample_every = 300
  config.optimizer.learning_rate = 5e-4
  config.model.generator_widths = (16, 32, 64, 64)
  config.model.discriminator_widths = (16, 32, 64)
  config.model.classifier_widths = (16, 32, 64)
  return config

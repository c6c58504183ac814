"""IF-GAN on 32x32 synthetic faces at peak frames, minutes on a 2-core CPU.

The paper's losses (weights 1, 20, 10, 1; island alpha 0.03) and optimizer (Adam, beta
(0.9, 0.99), weight decay 1e-4, learning rate x 0.9 per tenth of the run) at a CPU scale: narrow
networks, batch 32, a higher learning rate than the paper's 1e-4 so that 6 epochs suffice.
`--config.model.attention=False` is the "IF-GAN w/o attention" ablation;
`--config.target_face=class_pixel_mean` the paper's target as printed, and
`--config.dataset_options.min_intensity=0.0` faces of every intensity.
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
      island_weight=1.0, island_alpha=0.03, centre_learning_rate=0.5,
      # E's softmax and island losses on the real pair (x, target face) as well as on (x, G(x)),
      # and E's loss reaching G through G(x): both as the paper has them.
      classifier_real_pair=True, classifier_trains_generator=True))
  # G's target and D's real image (flaxflow.analysis.ifgan_ground_truth.TARGET_FACES): the
  # paper's per-class pixel mean of the training images.
  config.target_face = "class_pixel_mean"
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
  # Peak frames (intensities in (0.7, 1]), as the paper's posed datasets; 0.0: every intensity.
  config.dataset_options.min_intensity = 0.7
  # Beyond the paper: G's target is each face's average-identity render, which only a renderer
  # gives; "aligned_peak_class_mean" is the paper's with its alignment, "class_pixel_mean" as
  # printed.
  config.target_face = "average_identity"
  config.batch_size = 32
  config.eval_batch_size = 320
  config.num_steps = 1500  # 6.25 epochs of the 7680 training faces.
  config.log_every = 50
  config.checkpoint_every = 500
  config.sample_every = 500
  config.eval_every = 500  # On the test faces, against ground truth: convergence is visible.
  config.optimizer.learning_rate = 5e-4
  # The paper's x 0.9 every 10 of its 100 epochs, as x 0.9 every epoch of these 6.
  config.optimizer.decay_every_epochs = 1
  config.model.generator_widths = (16, 32, 64, 64)
  config.model.discriminator_widths = (16, 32, 64)
  config.model.classifier_widths = (16, 32, 64)
  return config

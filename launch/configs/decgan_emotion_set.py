"""DECGAN on 64x64 EmotionSet at the paper's sizes (Tables 1 and 2) for a GPU: Adam 2e-4,
betas (0.5, 0.999), batch 16, cycle weight 10, association weight 1, a history of 50 generated
images per expression for D.

Two terms the paper does not have: `decgan.target_class_weight` (StarGAN's classification of
each generated image as its target expression, by E2, which does not learn from it) and
`decgan.reconstruction_weight` (the L1 of G1(E1(x), p(l | x)) against x, the auto-encoder of the
paper's section 3.2); 0 for both restores its loss set. `model.condition_shifts` adds a learned
shift of the condition to every instance-normed generator layer, since the norm erases most of
what the tiled condition adds through a convolution (`flaxflow.gan.decgan.Generator`); False keeps
the paper's concatenation alone.
"""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.gan_config()
  config.dataset = "emotion_set/64"
  config.batch_size = 16
  config.eval_batch_size = 256
  config.num_steps = 200_000
  config.checkpoint_every = 5000
  config.sample_every = 5000
  # On synthetic faces: the transfer scored against ground truth every this many steps (0: at
  # the end only), on the peak frames of `decgan.eval_people` test people (0: all 20).
  config.eval_every = 5000
  config.decgan = ml_collections.ConfigDict(dict(
      cycle_weight=10.0, classification_weight=1.0, association_weight=1.0,
      target_class_weight=1.0, reconstruction_weight=10.0, history_size=50,
      adversarial_loss="non_saturating", expression_adversary_weight=0.0,
      discriminator_class_weight=1.0, change_weight=0.0, paired_weight=0.0, one_hot_fraction=0.0,
      eval_people=10))
  config.model = ml_collections.ConfigDict(dict(
      name="decgan", image_shape=(64, 64, 1), num_classes=7,
      encoder_widths=(64, 128, 256), encoder_kernels=(7, 3, 3), encoder_embedding_features=128,
      generator_widths=(256, 128, 64), generator_kernels=(3, 3, 7), generator_output_kernel=7,
      discriminator_widths=(64, 128, 256, 512), discriminator_kernel=7, share_generators=True,
      condition_shifts=True, identity_code="embedding", upsampling="transposed", output="drawn",
      discriminator_condition="concatenated", expression_adversary_width=0,
      generator_sees_image=False))
  return config

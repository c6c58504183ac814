"""IF-GAN on 64x64 EmotionSet at the paper's settings, for a GPU or TPU.

pix2pix widths for G (five levels down to 2x2) and D, E a ResNet-101 from scratch with group norm
(the paper fine-tunes an ImageNet one; none is loaded here), batch 50 and Adam at 1e-4 for about
100 epochs. Needs the built EmotionSet in `--config.data_dir`. `--config.model.attention=False`
is the "w/o attention" ablation.
"""

import ml_collections

from flaxflow.launch.configs import ifgan_faces


def get_config() -> ml_collections.ConfigDict:
  config = ifgan_faces.ifgan_config("emotion_set/64", 64)
  config.batch_size = 50
  config.eval_batch_size = 200
  config.num_steps = 200_000
  config.log_every = 500
  config.checkpoint_every = 5000
  config.sample_every = 5000
  config.eval_every = 10_000
  config.samples_per_class = 6
  config.model.generator_widths = (64, 128, 256, 512, 512)
  config.model.attention_encoder = 2
  config.model.attention_skip = 1
  config.model.attention_decoder = 0
  config.model.discriminator_widths = (64, 128, 256)
  config.model.classifier_kind = "resnet"
  config.model.norm = "group"
  config.model.feature_size = 512
  return config

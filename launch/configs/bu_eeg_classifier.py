"""The conditional-Glow classifier as the flow-latent recognition paper trains it on BU-EEG: 64x64
RGB face crops of 6 classes (`face_folders/64`: `--config.data_dir` holds the <label>/<subject>_*
folders), the architecture and optimizer of `emotion_set_classifier.py`. A GPU or TPU run.
"""

import ml_collections

from flaxflow.launch.configs import emotion_set_classifier


def get_config() -> ml_collections.ConfigDict:
  config = emotion_set_classifier.get_config()
  config.dataset = "face_folders/64"
  config.model.image_shape = (64, 64, 3)
  config.model.num_classes = 6
  return config

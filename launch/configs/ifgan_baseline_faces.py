"""The IF-GAN baseline on 32x32 synthetic faces: the same E as launch/configs/ifgan_faces.py,
trained alone on the raw image with the same softmax and island losses and optimizer."""

import ml_collections

from flaxflow.launch.configs import ifgan_faces


def get_config() -> ml_collections.ConfigDict:
  config = ifgan_faces.get_config()
  model = config.model
  config.model = ml_collections.ConfigDict(dict(
      name="expression_baseline", image_shape=model.image_shape, num_classes=model.num_classes,
      classifier_kind=model.classifier_kind, classifier_widths=model.classifier_widths,
      stage_sizes=model.stage_sizes, resnet_width=model.resnet_width,
      feature_size=model.feature_size, norm=model.norm))
  return config

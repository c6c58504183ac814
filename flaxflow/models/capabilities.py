"""What every model declares about itself, so that callers ask instead of probing attributes.

Training, evaluation and the research tools need to know a few things of any model: the image shape
it takes, how many classes it is conditioned on, whether it scores the classes itself, which labels
it consumes, and whether it preprocesses its input (SVD truncation). Each model class mixes in
`ModelCapabilities` and sets what differs from the defaults.
"""

from typing import ClassVar, Optional, Sequence, Tuple, TypeVar

Labels = TypeVar("Labels")


class ModelCapabilities:
  """The declared capabilities of a model; subclasses provide `image_shape` and `num_classes`.

  `num_classes` is 0 for an unconditional model. `is_classifier` marks a model that computes class
  logits itself (`class_logits`); other class-conditional models classify only by Bayes' rule.
  `has_likelihood` is False for a model without a density (a GAN's classifier): it has no
  `log_prob`, and evaluation reads only its `class_logits`.
  """

  image_shape: Tuple[int, ...]
  num_classes: int
  is_classifier: ClassVar[bool] = False
  has_likelihood: ClassVar[bool] = True
  # The rank its data are truncated to, on the discrete image (None: used as they are).
  svd_rank: Optional[int] = None

  @property
  def is_class_conditional(self) -> bool:
    return self.num_classes > 0

  @property
  def truncates_input(self) -> bool:
    """Whether the model is of SVD-truncated data (`flaxflow.objectives.model_input`)."""
    return self.svd_rank is not None

  def conditioning_labels(self, labels: Labels) -> Optional[Labels]:
    """`labels` if the model consumes them, None for an unconditional model."""
    return labels if self.is_class_conditional else None


def check_model_matches_data(model: ModelCapabilities, image_shape: Sequence[int],
                             class_names: Sequence[str], dataset: str) -> None:
  """Fails with the config fields to change when `model` cannot train on `dataset`."""
  if tuple(model.image_shape) != tuple(image_shape):
    raise ValueError(f"config.model.image_shape={tuple(model.image_shape)}, but {dataset} has "
                     f"images of shape {tuple(image_shape)}")
  if model.is_class_conditional and model.num_classes != len(class_names):
    raise ValueError(f"config.model.num_classes={model.num_classes}, but {dataset} has "
                     f"{len(class_names)} classes")

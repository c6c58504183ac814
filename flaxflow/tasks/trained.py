"""A trained model loaded back from its workdir, whatever its family."""

import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: ml_collections.ConfigDict  # The run's full training config.
  model: nn.Module
  variables: Any  # What `model.apply` takes (flows: {"params", "constants"}).
  step: int

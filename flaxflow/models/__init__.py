"""The flow models, and `create` to build one from an ml_collections config."""

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from flaxflow.models.bplf import BPLF
from flaxflow.models.classifier import ConditionalGlowClassifier
from flaxflow.models.glow import Glow
from flaxflow.models.multiscale import MultiscaleFlow

MODELS = {"glow": Glow, "bplf": BPLF, "classifier": ConditionalGlowClassifier}

__all__ = ["BPLF", "ConditionalGlowClassifier", "Glow", "MODELS", "MultiscaleFlow", "create"]


def create(model_config: Mapping[str, Any]) -> nn.Module:
  """The model named by `model_config["name"]`, built from the config's other fields."""
  fields = dict(model_config)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ValueError(f"model name {name!r}: expected one of {sorted(MODELS)}")
  if "image_shape" in fields:
    fields["image_shape"] = tuple(fields["image_shape"])
  if "dtype" in fields:  # Configs name the compute dtype as text, e.g. "bfloat16".
    fields["dtype"] = jnp.dtype(fields["dtype"])
  try:
    return MODELS[name](**fields)
  except TypeError as error:
    raise ValueError(f"model config for {name!r} has a field the model does not take: {error}") from None

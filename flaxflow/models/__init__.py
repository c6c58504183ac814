"""The flow models, and `create` to build one from an ml_collections config."""

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from flaxflow.models.bplf import BPLF
from flaxflow.models.classifier import ConditionalGlowClassifier
from flaxflow.models.glow import Glow
from flaxflow.models.multiscale import MultiscaleFlow

MODELS = {"glow": Glow, "bplf": BPLF, "classifier": ConditionalGlowClassifier}

__all__ = ["BPLF", "ConditionalGlowClassifier", "Glow", "MODELS", "MultiscaleFlow", "create",
           "create_from"]


def create(model_config: Mapping[str, Any]) -> nn.Module:
  """The flow named by `model_config["name"]`, built from the config's other fields."""
  return create_from(MODELS, model_config)


def create_from(registry: Mapping[str, Any], model_config: Mapping[str, Any]) -> nn.Module:
  """The model of `registry` named by `model_config["name"]`, built from the other fields."""
  fields = dict(model_config)
  name = fields.pop("name", None)
  if name not in registry:
    raise ValueError(f"model name {name!r}: expected one of {sorted(registry)}")
  # A config read back from JSON has lists where the file had tuples (shapes, widths).
  fields = {key: tuple(value) if isinstance(value, list) else value
            for key, value in fields.items()}
  if "dtype" in fields:  # Configs name the compute dtype as text, e.g. "bfloat16".
    fields["dtype"] = jnp.dtype(fields["dtype"])
  try:
    return registry[name](**fields)
  except TypeError as error:
    raise ValueError(
        f"model config for {name!r} has a field the model does not take: {error}") from None

"""A trained model loaded back from its workdir, whatever its family."""

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from flaxflow import checkpointing, parallel


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: ml_collections.ConfigDict  # The run's full training config.
  model: nn.Module
  variables: Any  # What `model.apply` takes (flows: {"params", "constants"}).
  step: int


def restore_task_state(task: Any, image_shape: Sequence[int], checkpoint_dir: str,
                       step: Optional[int], mesh: jax.sharding.Mesh) -> Any:
  """The train state of `task` (a `flaxflow.loop.Task` for images of `image_shape`) at `step`
  (default: the latest) in `checkpoint_dir`, replicated on `mesh`."""
  batch = {"image": jnp.zeros((mesh.size, *image_shape), jnp.uint8),
           "label": jnp.zeros((mesh.size,), jnp.int32)}
  abstract_state = checkpointing.abstract_state(task.init_state,
                                                parallel.replicated_sharding(mesh), batch,
                                                jax.random.PRNGKey(0))
  return checkpointing.restore_for_reading(checkpoint_dir, abstract_state, step)

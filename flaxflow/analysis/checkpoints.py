"""A trained run's workdir back in memory: its config, its model, and the variables of a checkpoint.

`python -m launch.train --workdir W` leaves `W/config.json` and Orbax checkpoints in
`W/checkpoints`; `load_trained(W)` rebuilds the model from the config and restores the latest (or
a chosen) step.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from flaxflow import checkpointing, models, parallel, training

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: ml_collections.ConfigDict  # The run's full training config.
  model: nn.Module
  variables: Any  # {"params", "constants"} for `model.apply`.
  step: int


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config that `launch.train` saved in `workdir`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"workdir {workdir}: no {CONFIG_FILE}; train into it first with "
                            f"python -m launch.train --workdir {workdir}")
  with open(path) as file:
    try:
      return ml_collections.ConfigDict(json.load(file))
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def _reading_manager(directory: str) -> ocp.CheckpointManager:
  # Without launch.train's clean-up of temporary folders, which could be a save still under way.
  options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=(checkpointing.STATE_ITEM, checkpointing.DATA_ITEM))


def restore_state(config: ml_collections.ConfigDict, model: nn.Module, checkpoint_dir: str,
                  step: Optional[int] = None,
                  mesh: Optional[jax.sharding.Mesh] = None) -> training.TrainState:
  """The `TrainState` of `step` (default: the latest) in `checkpoint_dir`, replicated on `mesh`."""
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"no checkpoint folder {checkpoint_dir}")
  mesh = parallel.make_mesh() if mesh is None else mesh
  optimizer = training.make_optimizer(config.optimizer, config.num_steps)
  init = functools.partial(training.create_train_state, model, optimizer, n_bits=config.n_bits,
                           use_ema=config.ema_decay > 0)
  image_shape = tuple(config.model.image_shape)
  batch = {"image": jnp.zeros((mesh.size, *image_shape), jnp.uint8),
           "label": jnp.zeros((mesh.size,), jnp.int32)}
  replicated = parallel.replicated_sharding(mesh)
  abstract_state = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
      jax.eval_shape(init, batch, jax.random.PRNGKey(0)))
  manager = _reading_manager(checkpoint_dir)
  try:
    available = manager.all_steps()
    if step is not None and step not in available:
      raise ValueError(f"step={step}: {checkpoint_dir} has the steps {sorted(available)}")
    state, _ = checkpointing.restore(manager, abstract_state, step)
  finally:
    manager.close()
  return state


def load_trained(workdir: str, step: Optional[int] = None, use_ema: bool = True,
                 mesh: Optional[jax.sharding.Mesh] = None) -> TrainedModel:
  """The model of the run in `workdir` with the variables of checkpoint `step` (default: latest).

  `use_ema` takes the averaged parameters when the run kept them (the ones its samples and
  evaluations used).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = read_config(workdir)
  model = models.create(config.model)
  state = restore_state(config, model, os.path.join(workdir, CHECKPOINT_DIR), step, mesh)
  return TrainedModel(config=config, model=model, variables=state.variables(use_ema=use_ema),
                      step=int(np.asarray(state.step)))

"""Model families as tasks of the shared training loop (`flaxflow.loop.Task`), chosen by the
config's `model.name`.

Each family's module declares `MODEL_NAMES` and `TAKES_SYNTHETIC_FACES` and gives:
  `check_config(config)`: its own config fields, checked before any data is loaded;
  `create_model(model_config)`: the model (a module with `flaxflow.models.capabilities`);
  `create_task(config, mesh, *, image_shape, class_names, eval_batches, train_batches)`: the
    `loop.Task` that trains `config.model` on data of `image_shape` and `class_names`, failing
    with the config fields to change when the two do not match; `train_batches()` is one pass
    over the training split for a family that needs one before training (IF-GAN's average
    faces); a family that scores itself against ground truth while it trains (IF-GAN,
    DECGAN) also takes `synthetic_faces` (`takes_synthetic_faces`);
  `load_trained(workdir, step, use_ema, mesh)`: the trained model of a finished or running run;
  `init_variables(config, rng)`: the variables of `config.model` (for checks of a config);
and may give
  `batch_features(config)`: the dataset's features beyond image and label that its training
    batches must carry (the intensity of IF-GAN's per-image target).
The families that transfer expressions (flows, DECGAN) also give
  `transfer_methods(run, train_batches, class_names, shift)`: {condition set:
    `flaxflow.scoring.Method`}, the headline first, for a trained run; `train_batches()` is one
    pass over its training split, `shift` a flow's `analysis.generation.LatentShift`.
"""

from types import ModuleType
from typing import Optional, Tuple

import jax
import ml_collections

from flaxflow.tasks import cnn, decgan, flow, ifgan
from flaxflow.workdir import Workdir

FAMILIES = (flow, cnn, decgan, ifgan)


def family_of(config: ml_collections.ConfigDict) -> ModuleType:
  """The task module of `config.model.name`."""
  name = config.model.get("name")
  for family in FAMILIES:
    if name in family.MODEL_NAMES:
      return family
  known = sorted(model for family in FAMILIES for model in family.MODEL_NAMES)
  raise ValueError(f"--config.model.name={name!r}: expected one of {', '.join(known)}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The fields of `config`'s model family, checked before any data is loaded."""
  family_of(config).check_config(config)


def takes_synthetic_faces(config: ml_collections.ConfigDict) -> bool:
  """Whether `config`'s family scores itself against ground truth while it trains (IF-GAN,
  DECGAN): its `create_task` then takes `synthetic_faces` (the run's synthetic-faces build and
  independent readers, `flaxflow.tasks.ifgan.SyntheticFaces`)."""
  return family_of(config).TAKES_SYNTHETIC_FACES


def batch_features(config: ml_collections.ConfigDict) -> Tuple[str, ...]:
  """The features beyond image and label that `config`'s family reads from its training
  batches."""
  family = family_of(config)
  return tuple(family.batch_features(config)) if hasattr(family, "batch_features") else ()


def create_model(config: ml_collections.ConfigDict):
  """The model of `config.model`, of whichever family it is."""
  return family_of(config).create_model(config.model)


def transfer_methods(run, train_batches, class_names, shift) -> dict:
  """The trained `run`'s ways to transfer expressions (its family's `transfer_methods`)."""
  family = family_of(run.config)
  if not hasattr(family, "transfer_methods"):
    raise ValueError(f"a run of {run.config.model.name} does not transfer expressions (the flows "
                     "and DECGAN do)")
  return family.transfer_methods(run, train_batches, class_names, shift)


def load_trained(workdir: str, step: Optional[int] = None, use_ema: bool = True,
                 mesh: Optional[jax.sharding.Mesh] = None):
  """The trained model of the run in `workdir`, of whichever family it is."""
  return family_of(Workdir(workdir).read_config()).load_trained(workdir, step, use_ema, mesh)

"""The CNN baseline (`flaxflow.models.cnn`) as a task of the training loop: cross entropy of the
class logits on dequantised images, trained and evaluated as the flows are (the flow task's train
step, optimizer, parameter averaging and held-out evaluation), without samples.

Config: `model.name = "cnn"` with `image_shape`, `num_classes`, optional `widths` and
`dense_width`; `launch/configs/digits_cnn.py` and `faces_cnn.py`.
"""

import functools
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from flaxflow import objectives, optimization
from flaxflow.analysis import batches as batches_lib
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.models.cnn import CNNClassifier
from flaxflow.tasks import flow
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir

Array = jax.Array
MODEL_NAMES = ("cnn",)
# Trains without the synthetic faces' build and readers.
TAKES_SYNTHETIC_FACES = False


def create_model(model_config: ml_collections.ConfigDict) -> CNNClassifier:
  fields = dict(model_config)
  name = fields.pop("name", None)
  if name not in MODEL_NAMES:
    raise ValueError(f"model name {name!r}: expected one of {MODEL_NAMES}")
  fields["image_shape"] = tuple(fields["image_shape"])
  if "widths" in fields:
    fields["widths"] = tuple(fields["widths"])
  try:
    return CNNClassifier(**fields)
  except TypeError as error:
    raise ValueError(f"model config for 'cnn' has a field the model does not take: "
                     f"{error}") from None


def loss_and_metrics(model: nn.Module, variables: Any, images: Array, labels: Array,
                     rng: Optional[Array], *, n_bits: int) -> Tuple[Array, Dict[str, Array]]:
  """Mean cross entropy of the class logits of the dequantised images, and the accuracy."""
  logits = model.apply(variables, objectives.dequantize(rng, images, n_bits))
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  return loss, {"loss": loss, "class_loss": loss, "accuracy": accuracy}


def init_variables(config: ml_collections.ConfigDict, rng: Array) -> Dict[str, Any]:
  """The variables of `config.model` (for checks of a config's model)."""
  model = create_model(config.model)
  return model.init(rng, jnp.zeros((1, *model.image_shape), jnp.float32))


def check_config(config: ml_collections.ConfigDict) -> None:
  flow.check_config(config)
  if config.model.get("num_classes", 0) < 2:
    raise ValueError(f"--config.model.num_classes={config.model.get('num_classes')}: the CNN "
                     "needs at least two classes")


class CNNTask(flow.FlowTask):
  """`flow.FlowTask` with the CNN's cross entropy for its loss, its own initialisation, and no
  samples (a classifier draws none)."""

  def __init__(self, config: ml_collections.ConfigDict, model: nn.Module,
               mesh: jax.sharding.Mesh, class_names: Sequence[str] = (),
               eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None):
    super().__init__(config, model, mesh, class_names, eval_batches)
    self.loss_fn = self.eval_loss_fn = functools.partial(loss_and_metrics, n_bits=config.n_bits)

  def init_state(self, batch: flow.Batch, rng: Array) -> flow.TrainState:
    params = self.model.init(rng, objectives.dequantize(None, batch["image"],
                                                        self.config.n_bits))["params"]
    return flow.TrainState(step=jnp.zeros((), jnp.int32), params=params, fixed_variables={},
                           opt_state=self.optimizer.init(params),
                           ema_params=params if self.config.ema_decay > 0 else None,
                           skips=optimization.SkipCount.zero())

  def write_samples(self, state: flow.TrainState, step: int, workdir: Workdir) -> None:
    del state, step, workdir


def create_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                image_shape: Sequence[int], class_names: Sequence[str],
                eval_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None,
                train_batches: Optional[Callable[[], Iterable[batches_lib.Batch]]] = None
                ) -> CNNTask:
  del train_batches  # Nothing to learn before training.
  model = create_model(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  flow.check_eval_batch_size(config, mesh)
  return CNNTask(config, model, mesh, class_names, eval_batches)


def load_trained(workdir: str, step: Optional[int] = None, use_ema: bool = True,
                 mesh: Optional[jax.sharding.Mesh] = None) -> TrainedModel:
  return flow.load_trained(workdir, step, use_ema, mesh, create_model=create_model,
                           task_class=CNNTask)

"""t-SNE of a flow's latents: one chosen latent per image, flattened, embedded in 2-D.

For the conditional-Glow classifier the deepest latent is z_1' = h(z_1, y) (the paper's Figures
2-3). h maps every class onto one prior, so z_1' shows the variation within classes (in the paper:
subjects); f's raw z_1 shows the classes apart.

Which y a class-conditional model encodes with (`labels`): "predicted", the model's own Bayes'-rule
label (the default); "true", the example's label, which puts the label into the features, so that
any classifier later fitted on them learns it from there (a leak: for pictures only); "none", no
label (the classifier's raw z_1; class-conditional Glow and BPLF cannot encode without one).
"""

from typing import Any, Dict, Iterable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import sklearn.manifold

from flaxflow import objectives
from flaxflow.analysis import batches as batches_lib

LABEL_SOURCES = ("predicted", "true", "none")


def latent_features(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
                    level: int = -1, labels: str = "predicted", n_bits: int,
                    mesh: Optional[jax.sharding.Mesh] = None) -> Dict[str, np.ndarray]:
  """{"features": (N, D) the flattened latent `level` (shallowest first, -1: deepest), "label",
  "subject", and for class-conditional models "prediction" (the Bayes'-rule label)} for every
  real example of `batches`, encoded at the bin centres with the `labels` of `LABEL_SOURCES`.
  """
  if labels not in LABEL_SOURCES:
    raise ValueError(f"labels={labels!r}: expected one of {', '.join(LABEL_SOURCES)}")
  conditional = model.is_class_conditional
  if labels == "none" and conditional and not model.is_classifier:
    raise ValueError(f"labels='none': {type(model).__name__} is class-conditional and cannot "
                     "encode without a label")

  @jax.jit
  def encode(variables, images, true_labels):
    x = objectives.model_input(model, None, images, n_bits)
    outputs = {}
    if conditional:
      outputs["prediction"] = jnp.argmax(objectives.class_log_joint(model, variables, x), -1)
    given = {"predicted": outputs.get("prediction"), "true": true_labels, "none": None}[labels]
    latents, _ = model.apply(variables, x, model.conditioning_labels(given), method="encode")
    if not -len(latents) <= level < len(latents):
      raise ValueError(f"level={level}: the model has {len(latents)} latents (levels "
                       f"{-len(latents)}..{len(latents) - 1})")
    return dict(outputs, features=latents[level].reshape(x.shape[0], -1))

  parts = list(batches_lib.map_batches(
      lambda images, true_labels, index: encode(variables, images, true_labels), batches, mesh))
  if not parts:
    raise ValueError("batches: no batches")
  subjects = [batch.get("subject", np.full(len(batch["label"]), "", object)) for _, batch in parts]
  result = {name: np.concatenate([outputs[name] for outputs, _ in parts]) for name in parts[0][0]}
  result.update(label=np.concatenate([batch["label"] for _, batch in parts]).astype(np.int32),
                subject=np.concatenate(subjects).astype(str))
  if "prediction" in result:
    result["prediction"] = result["prediction"].astype(np.int32)
  return result


def tsne_embedding(features: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
  """(N, 2) t-SNE embedding of (N, D) `features` (PCA initialisation, seeded)."""
  features = np.asarray(features, np.float32)
  if features.ndim != 2:
    raise ValueError(f"features of shape {features.shape}: expected (examples, dimensions)")
  if not 0 < perplexity < len(features):
    raise ValueError(f"perplexity={perplexity}: must lie in (0, number of examples = "
                     f"{len(features)}); lower it or embed more examples")
  tsne = sklearn.manifold.TSNE(n_components=2, perplexity=perplexity, init="pca",
                               random_state=seed)
  return tsne.fit_transform(features)

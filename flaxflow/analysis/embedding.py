"""t-SNE of a flow's latents: one chosen latent per image, flattened, embedded in 2-D.

For the conditional-Glow classifier the deepest latent is z_1' = h(z_1, y) (the paper's Figures
2-3), computed with each image's true label. h maps every class onto one prior, so z_1' shows the
variation within classes (in the paper: subjects); f's raw z_1 shows the classes apart.
"""

from typing import Any, Dict, Iterable, Optional

import flax.linen as nn
import jax
import numpy as np
import sklearn.manifold

from flaxflow import objectives
from flaxflow.analysis import batches as batches_lib


def latent_features(model: nn.Module, variables: Any, batches: Iterable[batches_lib.Batch], *,
                    level: int = -1, use_labels: bool = True, n_bits: int,
                    mesh: Optional[jax.sharding.Mesh] = None) -> Dict[str, np.ndarray]:
  """{"features": (N, D) the flattened latent `level` (shallowest first, -1: deepest), "label",
  "subject"} for every real example of `batches`, encoded at the bin centres.

  Class-conditional models encode with each example's label unless `use_labels` is False, which
  the classifier allows (its f's raw z_1 instead of z_1') and class-conditional Glow/BPLF do not.
  """

  @jax.jit
  def encode(variables, images, labels):
    x = objectives.model_input(model, None, images, n_bits)
    labels = model.conditioning_labels(labels) if use_labels else None
    latents, _ = model.apply(variables, x, labels, method="encode")
    if not -len(latents) <= level < len(latents):
      raise ValueError(f"level={level}: the model has {len(latents)} latents (levels "
                       f"{-len(latents)}..{len(latents) - 1})")
    return latents[level].reshape(x.shape[0], -1)

  parts = [(features["features"], batch)
           for features, batch in batches_lib.map_batches(
               lambda images, labels, index: {"features": encode(variables, images, labels)},
               batches, mesh)]
  if not parts:
    raise ValueError("batches: no batches")
  subjects = [batch.get("subject", np.full(len(batch["label"]), "", object)) for _, batch in parts]
  return {"features": np.concatenate([features for features, _ in parts]),
          "label": np.concatenate([batch["label"] for _, batch in parts]).astype(np.int32),
          "subject": np.concatenate(subjects).astype(str)}


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

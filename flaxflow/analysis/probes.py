"""Linear probes: how much of a factor (expression, subject) a latent holds, as the held-out
accuracy of a logistic regression that reads the factor off the latent.

Every subject's images are split in two, so the probe of the subject is tested on new images
of people it has seen, and the probe of the expression on the same people too.
"""

from typing import Any, Dict, List, Mapping

import flax.linen as nn
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import embedding


def held_out_within_groups(groups: np.ndarray, test_fraction: float = 0.5,
                           seed: int = 0) -> np.ndarray:
  """Boolean (N,) test mask: in each group (e.g. subject), a random `test_fraction` of its rows
  (at least one, and at least one left to train on, where the group has two rows or more)."""
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction}: expected a fraction in (0, 1)")
  groups = np.asarray(groups)
  rng = np.random.default_rng(seed)
  test = np.zeros(len(groups), bool)
  for group in np.unique(groups):
    rows = rng.permutation(np.flatnonzero(groups == group))
    if len(rows) >= 2:
      count = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
      test[rows[:count]] = True
  return test


def probe_accuracy(features: np.ndarray, targets: np.ndarray, test: np.ndarray) -> float:
  """Accuracy on the `test` rows of a logistic regression fitted on the other rows, reading
  `targets` from standardised (N, D) `features`."""
  features, targets, test = np.asarray(features), np.asarray(targets), np.asarray(test, bool)
  if features.ndim != 2 or len(features) != len(targets) or test.shape != targets.shape:
    raise ValueError(f"features {features.shape}, targets {targets.shape}, test {test.shape}: "
                     "expected (N, D), (N,) and (N,)")
  if test.all() or not test.any():
    raise ValueError("test: expected rows both to fit on and to test on")
  probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
  probe.fit(features[~test], targets[~test])
  return float(probe.score(features[test], targets[test]))


def latent_probes(model: nn.Module, variables: Any, examples: Mapping[str, np.ndarray], *,
                  n_bits: int, batch_size: int, test_fraction: float = 0.5,
                  seed: int = 0) -> List[Dict[str, Any]]:
  """Per latent level (shallowest first), the probe accuracies of the expression ("label") and
  of the subject from the flattened latent of in-memory `examples` ("image", "label",
  "subject"), each subject's images split by `held_out_within_groups`. Latents are encoded as
  `embedding.latent_features` does, with the model's predicted label (the true one would put the
  expression into the features the expression probe reads)."""
  subjects = np.asarray(examples["subject"])
  test = held_out_within_groups(subjects, test_fraction, seed)
  rows = []
  for level in range(model.levels):
    latents = embedding.latent_features(
        model, variables, batches_lib.array_batches(examples, batch_size), level=level,
        n_bits=n_bits)
    rows.append({"level": level, "dimensions": int(latents["features"].shape[1]),
                 "expression_accuracy": probe_accuracy(latents["features"], latents["label"],
                                                       test),
                 "subject_accuracy": probe_accuracy(latents["features"], latents["subject"],
                                                    test)})
  return rows


def pixel_probes(images: np.ndarray, labels: np.ndarray, subjects: np.ndarray,
                 test: np.ndarray) -> Dict[str, float]:
  """The probe accuracies of the expression and of the subject read off the pixels of uint8
  `images` (N, H, W, C), fitted on the rows outside `test`: how much of each an image shows."""
  pixels = np.asarray(images, np.float32).reshape(len(images), -1) / 255
  return {"expression_accuracy": probe_accuracy(pixels, labels, test),
          "subject_accuracy": probe_accuracy(pixels, subjects, test)}

"""k-fold cross-validation folds that never put one subject in both the training and the test part.

Where the dataset names subjects, folds are drawn by scikit-learn's `StratifiedGroupKFold` with the
subject as the group (classes kept as balanced as the subjects allow); an example without a subject
(e.g. FER2013's) is a group of its own. Without any subjects (digits, MNIST) they are plain
class-stratified folds, and the scheme says so.
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np
import sklearn.model_selection

Fold = Tuple[np.ndarray, np.ndarray]  # (train indices, test indices)


@dataclasses.dataclass(frozen=True)
class Folds:
  folds: List[Fold]
  scheme: str  # How the folds were drawn, for the report.


def make_folds(labels: np.ndarray, subjects: Sequence[str], num_folds: int, seed: int = 0) -> Folds:
  """`num_folds` (train, test) index pairs over all examples, disjoint by subject where named."""
  labels = np.asarray(labels)
  subjects = np.asarray(subjects, dtype=str)
  if len(subjects) != len(labels):
    raise ValueError(f"subjects has {len(subjects)} entries for {len(labels)} labels")
  if num_folds < 2:
    raise ValueError(f"num_folds={num_folds}: cross-validation needs at least 2 folds")
  indices = np.arange(len(labels))
  named = subjects != ""
  if not named.any():
    if num_folds > np.bincount(labels).max():
      raise ValueError(f"num_folds={num_folds} exceeds the examples of every class")
    splitter = sklearn.model_selection.StratifiedKFold(num_folds, shuffle=True, random_state=seed)
    folds = list(splitter.split(indices, labels))
    return Folds(folds, "class-stratified folds (the dataset has no subjects, so folds cannot "
                        "be subject-disjoint)")
  groups = np.where(named, subjects, np.char.add("#example-", indices.astype(str)))
  num_groups = len(np.unique(groups))
  if num_groups < num_folds:
    raise ValueError(f"num_folds={num_folds}: the data have only {num_groups} subjects")
  splitter = sklearn.model_selection.StratifiedGroupKFold(num_folds, shuffle=True,
                                                          random_state=seed)
  folds = list(splitter.split(indices, labels, groups))
  scheme = f"subject-disjoint folds over {len(np.unique(subjects[named]))} subjects"
  if not named.all():
    scheme += f" ({int((~named).sum())} examples without a subject are each their own group)"
  return Folds(folds, scheme)


def summarize(accuracies: Sequence[float]) -> dict:
  """{"mean", "std" (over the folds, ddof=0), "folds"} of per-fold accuracies."""
  accuracies = np.asarray(accuracies, np.float64)
  if accuracies.size == 0:
    raise ValueError("accuracies: no folds")
  return {"mean": float(accuracies.mean()), "std": float(accuracies.std()),
          "folds": accuracies.round(6).tolist()}

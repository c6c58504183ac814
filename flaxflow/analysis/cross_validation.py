"""Cross-validation folds under three protocols (`PROTOCOLS`), and their summary.

"subject_disjoint" (the default): k folds that never put one subject in both the training and the
test part, drawn by scikit-learn's `StratifiedGroupKFold` with the subject as the group (classes
kept as balanced as the subjects allow); an example without a subject (e.g. FER2013's) is a group
of its own. Without any subjects (digits, MNIST) they are plain class-stratified folds, and the
scheme says so.
"uniform": k class-stratified folds over all examples, whoever they show (subject-dependent:
the classifier paper's 10-fold protocol for its 87.5%).
"leave_one_subject_out": one fold per subject, that subject's images the test part (the paper's
subject-independent experiment holds out one subject); the dataset must name subjects.
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np
import sklearn.model_selection

Fold = Tuple[np.ndarray, np.ndarray]  # (train indices, test indices)
PROTOCOLS = ("subject_disjoint", "uniform", "leave_one_subject_out")


@dataclasses.dataclass(frozen=True)
class Folds:
  folds: List[Fold]
  scheme: str  # How the folds were drawn, for the report.


def _uniform_folds(labels: np.ndarray, num_folds: int, seed: int) -> List[Fold]:
  if num_folds > np.bincount(labels).max():
    raise ValueError(f"num_folds={num_folds} exceeds the examples of every class")
  splitter = sklearn.model_selection.StratifiedKFold(num_folds, shuffle=True, random_state=seed)
  return list(splitter.split(np.arange(len(labels)), labels))


def make_folds(labels: np.ndarray, subjects: Sequence[str], num_folds: int, seed: int = 0,
               protocol: str = "subject_disjoint") -> Folds:
  """(train, test) index pairs over all examples under `protocol` (see the module docstring);
  `num_folds` is not used by leave_one_subject_out, which has one fold per subject."""
  labels = np.asarray(labels)
  subjects = np.asarray(subjects, dtype=str)
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
  if len(subjects) != len(labels):
    raise ValueError(f"subjects has {len(subjects)} entries for {len(labels)} labels")
  indices = np.arange(len(labels))
  named = subjects != ""
  if protocol == "leave_one_subject_out":
    if not named.all():
      raise ValueError(f"protocol=leave_one_subject_out: {int((~named).sum())} examples name no "
                       "subject")
    folds = list(sklearn.model_selection.LeaveOneGroupOut().split(indices, labels, subjects))
    if len(folds) < 2:
      raise ValueError("protocol=leave_one_subject_out: the data have only one subject")
    return Folds(folds, f"leave-one-subject-out: {len(folds)} folds, each holding out one "
                        "subject (subject-independent)")
  if num_folds < 2:
    raise ValueError(f"num_folds={num_folds}: cross-validation needs at least 2 folds")
  if protocol == "uniform":
    return Folds(_uniform_folds(labels, num_folds, seed),
                 "uniform class-stratified folds over all examples (subject-dependent: a "
                 "subject's images fall in both training and test parts)")
  if not named.any():
    return Folds(_uniform_folds(labels, num_folds, seed),
                 "class-stratified folds (the dataset has no subjects, so folds cannot "
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

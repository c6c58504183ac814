"""Expression transfer scored against ground truth, for datasets that can redraw any face.

A transfer moves an image of one expression (the source) to another (the target). Where the
dataset can render the same person under the same pose, light and noise with the target
expression (synthetic faces), the transferred image is compared with that render: mean
absolute error (L1, pixels scaled to [0, 1]) and SSIM. The untouched input, compared with the
same render, is the reference a transfer has to beat. An expression classifier on gradient
histograms, trained on other people, says whether the transfer reads as the target.
"""

from typing import Dict, Sequence, Tuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from flaxflow.scoring.metrics import l1_errors, ssim_scores
from flaxflow.scoring.readers import gradient_histograms


def feature_cell(image_side: int) -> int:
  """The histogram cell for `image_side`-pixel faces: 3 pixels at 32x32, where new people's
  expressions are recognised best among cells of 3 to 6 (94% against 66% for 6)."""
  return max(2, image_side // 10)


def fit_expression_classifier(images: np.ndarray, labels: np.ndarray) -> Pipeline:
  """Logistic regression on standardised gradient histograms of uint8 `images` (N, H, W, 1);
  predict with `predict_expressions`. Any other labels of the images (e.g. subjects) work the
  same way."""
  classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
  return classifier.fit(gradient_histograms(images, feature_cell(images.shape[1])), labels)


def predict_expressions(classifier: Pipeline, images: np.ndarray) -> np.ndarray:
  """The classes `classifier` (from `fit_expression_classifier`) gives uint8 `images`."""
  return classifier.predict(gradient_histograms(images, feature_cell(images.shape[1])))


def identity_kept(transferred: np.ndarray, subjects: np.ndarray, references: np.ndarray,
                  reference_subjects: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
  """(B, classes): whether input b moved to class c still reads as its person.

  For each target class c, a subject classifier (`fit_expression_classifier` on subjects) is
  fitted on the `references` (uint8 images of the same people) whose expression is not c, so
  that it cannot match the target expression of an image it was shown, and reads the subject
  of every transfer to c.
  """
  batch, num_classes = transferred.shape[:2]
  kept = np.zeros((batch, num_classes), bool)
  for target in range(num_classes):
    others = reference_labels != target
    classifier = fit_expression_classifier(references[others], reference_subjects[others])
    kept[:, target] = predict_expressions(classifier, transferred[:, target]) == subjects
  return kept


def pair_means(values: np.ndarray, sources: np.ndarray, targets: np.ndarray,
               num_classes: int) -> np.ndarray:
  """(classes, classes) mean of `values` over the rows of each source -> target pair; NaN
  where a pair has no rows."""
  sums = np.zeros((num_classes, num_classes))
  counts = np.zeros((num_classes, num_classes))
  np.add.at(sums, (sources, targets), values)
  np.add.at(counts, (sources, targets), 1)
  with np.errstate(invalid="ignore"):
    return sums / counts


def transfer_scores(inputs: np.ndarray, sources: np.ndarray, transferred: np.ndarray,
                    ground_truth: np.ndarray, predicted: np.ndarray,
                    class_names: Sequence[str]) -> Dict[str, object]:
  """Scores of a transfer of every input to every class, against ground-truth renders.

  Args:
    inputs: uint8 (B, H, W, 1), the untouched images.
    sources: (B,) their expression classes.
    transferred: uint8 (B, classes, H, W, 1), input b moved to class c.
    ground_truth: uint8 (B, classes, H, W, 1), input b's person, pose, light and noise
      rendered with class c.
    predicted: (B, classes) an expression classifier's classes of `transferred`.
    class_names: the classes' names.

  Returns:
    "l1", "ssim", "input_l1", "target_accuracy": (classes, classes) lists, rows the source and
    columns the target class; "mean_l1", "mean_ssim", "mean_input_l1",
    "mean_target_accuracy" over the pairs whose source and target differ; "class_names".
  """
  num_classes = len(class_names)
  batch = len(inputs)
  if transferred.shape[:2] != (batch, num_classes) or ground_truth.shape != transferred.shape:
    raise ValueError(f"transferred {transferred.shape} and ground_truth {ground_truth.shape}: "
                     f"expected ({batch}, {num_classes}, H, W, C) for {batch} inputs")
  flat = lambda images: images.reshape(batch * num_classes, *images.shape[2:])
  untouched = np.repeat(inputs[:, None], num_classes, axis=1)
  columns = np.tile(np.arange(num_classes), batch)
  per_example = {
      "l1": l1_errors(flat(transferred), flat(ground_truth)),
      "ssim": ssim_scores(flat(transferred), flat(ground_truth)),
      "input_l1": l1_errors(flat(untouched), flat(ground_truth)),
      "target_accuracy": (np.asarray(predicted).reshape(-1) == columns).astype(np.float64),
  }
  return {"class_names": list(class_names),
          **pair_tables({name: values.reshape(batch, num_classes)
                         for name, values in per_example.items()}, sources)}


def pair_tables(per_transfer: Dict[str, np.ndarray], sources: np.ndarray) -> Dict[str, object]:
  """For each (B, classes) array of `per_transfer` (input b moved to class c): its
  (classes, classes) table of means per source -> target pair as lists under its name, and
  its mean over the transfers whose source and target differ under "mean_<name>"."""
  tables = {}
  for name, values in per_transfer.items():
    batch, num_classes = values.shape
    rows = np.repeat(np.asarray(sources), num_classes)
    columns = np.tile(np.arange(num_classes), batch)
    flat = np.asarray(values, np.float64).reshape(-1)
    tables[name] = pair_means(flat, rows, columns, num_classes).tolist()
    tables[f"mean_{name}"] = float(flat[rows != columns].mean())
  return tables


def format_transfer_scores(scores: Dict[str, object],
                           extra_tables: Sequence[Tuple[str, str]] = ()) -> str:
  """`transfer_scores` as text: the means, then one source x target table per score, and one
  per (key, title) of `extra_tables` (e.g. tables of `pair_tables`)."""
  names = scores["class_names"]
  width = max(8, *(len(name) for name in names))
  lines = [f"over source != target pairs: L1 {scores['mean_l1']:.4f} (untouched input "
           f"{scores['mean_input_l1']:.4f}), SSIM {scores['mean_ssim']:.4f}, target accuracy "
           f"{100 * scores['mean_target_accuracy']:.1f}%"]
  for key, title in (("l1", "L1 to the ground truth"), ("input_l1", "L1 of the untouched input"),
                     ("ssim", "SSIM to the ground truth"),
                     ("target_accuracy", "target-expression accuracy"), *extra_tables):
    lines.append(f"{title} (rows: source, columns: target):")
    lines.append(" " * width + "".join(f"{name:>{width + 1}}" for name in names))
    for name, row in zip(names, scores[key]):
      lines.append(f"{name:>{width}}" + "".join(f"{value:>{width + 1}.3f}" for value in row))
  return "\n".join(lines)

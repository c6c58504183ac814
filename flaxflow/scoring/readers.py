"""The independent readers: an expression classifier and an identity measure that no model
trains with and that are never a model's own networks.

Both read the same features of an image (`features`: gradient-orientation histograms, which
tolerate small shifts, beside the mean grey level of small squares, which keeps tones and the
darkness of an open mouth) and are linear on them:

* the expression reader is a logistic regression over the 7 classes;
* the identity measure is a Fisher discriminant (PCA, then LDA) of the training people: it keeps
  the directions along which people differ more than one person's images do across
  expressions, intensities, poses, light and noise, so that it is built to ignore expression.
  A face is given the person among the scored people whose reference images it is nearest to
  (`Readers.nearest_people`): chance is 1/K for K people.

They learn from images rendered afresh of the build's training people only (`fit_readers`):
every class equally often, intensities of peak frames and a little below, the dataset's range of
poses, light and noise. `load_readers` fits them once per build and keeps them in a file that
every later scoring reads.
"""

import dataclasses
import json
import os
import tempfile
import time
from typing import Dict

import numpy as np
from absl import logging
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from flaxflow.data.synthetic_faces import factors
from flaxflow.scoring import people as people_lib

# Bump whenever the features, the draws or the fits change: cached readers of another version
# are fitted again.
VERSION = 1
# Training images: each class this often per training person (98 images each, 11,760 for the
# default build's 120 people), at intensities in (0.6, 1]. Trained on every intensity instead,
# the expression reader reads peak frames of new people at 72% instead of 90% (the lowest
# intensities are nearly neutral faces with other labels).
TRAINING_PER_CLASS = 14
TRAINING_INTENSITIES = (0.6, 1.0)
# The logistic regression's inverse regularisation: 0.03, 0.1 and 0.3 read 95.8, 95.3 and
# 95.1% of new people's renders at intensity 0.85.
EXPRESSION_C = 0.03
IDENTITY_COMPONENTS = 200  # PCA components before the discriminant
# Reference images of each scored person: each class this often, at people.STATED_INTENSITY.
REFERENCE_PER_CLASS = 2


def gradient_histograms(images: np.ndarray, cell: int, bins: int = 8) -> np.ndarray:
  """(N, features): per cell of `cell` x `cell` pixels, the gradient magnitude summed by
  orientation (unsigned, `bins` bins), normalised per cell. uint8 `images` (N, H, W, 1); sides
  that `cell` does not divide are cropped evenly on both ends."""
  images = _checked_images(images)
  if not 1 <= cell <= min(images.shape[1:3]):
    raise ValueError(f"cell={cell}: expected 1..{min(images.shape[1:3])} for images of shape "
                     f"{images.shape}")
  grey = images[..., 0].astype(np.float32) / 255
  gradient_y, gradient_x = np.gradient(grey, axis=(1, 2))
  magnitude = np.hypot(gradient_x, gradient_y)
  orientation = np.mod(np.arctan2(gradient_y, gradient_x), np.pi)
  which = np.minimum((orientation * (bins / np.pi)).astype(int), bins - 1)
  count, height, width = grey.shape
  cells_y, cells_x = height // cell, width // cell
  top, left = (height - cells_y * cell) // 2, (width - cells_x * cell) // 2
  window = (slice(None), slice(top, top + cells_y * cell), slice(left, left + cells_x * cell))
  magnitude, which = magnitude[window], which[window]
  histograms = np.stack([
      np.where(which == b, magnitude, 0).reshape(count, cells_y, cell, cells_x, cell).sum(
          axis=(2, 4))
      for b in range(bins)], axis=-1)
  histograms /= np.linalg.norm(histograms, axis=-1, keepdims=True) + 1e-3
  return histograms.reshape(count, -1)


def pooled_pixels(images: np.ndarray, pool: int) -> np.ndarray:
  """(N, features): the mean grey level in [0, 1] of each `pool` x `pool` square."""
  images = _checked_images(images)
  count, height, width = images.shape[:3]
  grey = images[:, :height - height % pool, :width - width % pool, 0].astype(np.float32) / 255
  return grey.reshape(count, height // pool, pool, width // pool, pool).mean(axis=(2, 4)).reshape(
      count, -1)


def features(images: np.ndarray) -> np.ndarray:
  """What both readers read: histograms of cells of a tenth of the side (3 pixels at 32x32),
  and the grey level of squares of a sixteenth. At 32x32 the histograms alone read 92% of new
  people's expressions, with the grey levels 95%."""
  side = _checked_images(images).shape[1]
  return np.concatenate([gradient_histograms(images, max(2, side // 10)),
                         pooled_pixels(images, max(1, side // 16))], axis=1)


def _checked_images(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 1 or images.dtype != np.uint8:
    raise ValueError(f"images of shape {images.shape} and dtype {images.dtype}: expected uint8 "
                     "(N, H, W, 1) grayscale")
  return images


@dataclasses.dataclass(frozen=True)
class Readers:
  """The two readers as affine maps of `features`; `report` says how well they read (see
  `fit_readers`)."""

  image_size: int
  expression_weights: np.ndarray  # (features, classes)
  expression_bias: np.ndarray  # (classes,)
  identity_weights: np.ndarray  # (features, dimensions)
  identity_bias: np.ndarray  # (dimensions,)
  report: Dict

  def _features(self, images: np.ndarray) -> np.ndarray:
    images = _checked_images(images)
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"images of shape {images.shape}: these readers read "
                       f"{self.image_size}x{self.image_size} faces")
    return features(images)

  def read_expressions(self, images: np.ndarray) -> np.ndarray:
    """(N,) the expression class the reader sees in each uint8 (N, H, W, 1) image."""
    logits = self._features(images) @ self.expression_weights + self.expression_bias
    return np.argmax(logits, axis=1)

  def embed_people(self, images: np.ndarray) -> np.ndarray:
    """(N, dimensions): where each image lies in the identity measure's space."""
    return self._features(images) @ self.identity_weights + self.identity_bias

  def nearest_people(self, images: np.ndarray, references: people_lib.Drawn) -> np.ndarray:
    """(N,) for each image the person of `references` (their `person` index) whose reference
    images' mean is nearest in the identity measure. References with every class equally
    often (`reference_images`) give no person an edge through the expression."""
    reference_points = self.embed_people(references.images)
    count = references.person.max() + 1
    centres = np.stack([reference_points[references.person == person].mean(axis=0)
                        for person in range(count)])
    points = self.embed_people(images)
    distances = ((points[:, None, :] - centres[None]) ** 2).sum(axis=-1)
    return np.argmin(distances, axis=1)

  def save(self, path: str) -> None:
    """Writes the readers to `path` (.npz) through a temporary file in the same folder, so that
    a killed write never leaves a file that loads."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".readers_", suffix=".npz")
    try:
      with os.fdopen(handle, "wb") as file:
        np.savez(file, image_size=self.image_size, expression_weights=self.expression_weights,
                 expression_bias=self.expression_bias, identity_weights=self.identity_weights,
                 identity_bias=self.identity_bias, report=json.dumps(self.report))
      os.chmod(temporary, 0o644)  # mkstemp's file is the owner's alone
      os.replace(temporary, path)
    except BaseException:
      os.unlink(temporary)
      raise

  @classmethod
  def load(cls, path: str) -> "Readers":
    with np.load(path, allow_pickle=False) as stored:
      return cls(image_size=int(stored["image_size"]),
                 expression_weights=stored["expression_weights"],
                 expression_bias=stored["expression_bias"],
                 identity_weights=stored["identity_weights"],
                 identity_bias=stored["identity_bias"], report=json.loads(str(stored["report"])))


def reference_images(build: people_lib.FaceBuild, split: str,
                     per_class: int = REFERENCE_PER_CLASS) -> people_lib.Drawn:
  """The images `Readers.nearest_people` compares with: `per_class` renders of every class of
  each person of `split` at the stated intensity, in poses, light and noise of their own."""
  intensity = (people_lib.STATED_INTENSITY, people_lib.STATED_INTENSITY)
  return people_lib.draw_images(build, split, factors.REFERENCE_STREAM, per_class, intensity)


def _affine(transform, num_features: int):
  """(weights, bias) of an affine `transform` of (N, num_features) arrays."""
  bias = transform(np.zeros((1, num_features)))[0]
  return (transform(np.eye(num_features)) - bias).astype(np.float32), bias.astype(np.float32)


def fit_readers(build: people_lib.FaceBuild, per_class: int = TRAINING_PER_CLASS) -> Readers:
  """Both readers, fitted on `per_class` fresh renders of each class of each training person
  of `build`, and their report: the accuracy of each on the test people's images as the
  dataset draws them, at every intensity (the images of the build with min_intensity 0) and
  at peak frames (of the build with min_intensity 0.7), and on renders of the test people at
  the stated intensity; the identity measure also on the average person's face, whom it should
  give to each person at chance."""
  start = time.perf_counter()
  training = people_lib.draw_images(build, "train", factors.READER_STREAM, per_class,
                                    TRAINING_INTENSITIES)
  training_features = features(training.images)
  num_features = training_features.shape[1]
  scaler = StandardScaler().fit(training_features)
  standardised = scaler.transform(training_features)
  expression = LogisticRegression(C=EXPRESSION_C, max_iter=3000).fit(
      standardised, training.factors.expression)
  components = min(IDENTITY_COMPONENTS, *standardised.shape)
  projection = PCA(components, random_state=0).fit(standardised)
  discriminant = LinearDiscriminantAnalysis().fit(projection.transform(standardised),
                                                  training.person)
  expression_weights, expression_bias = _affine(
      lambda x: expression.decision_function(scaler.transform(x)), num_features)
  identity_weights, identity_bias = _affine(
      lambda x: discriminant.transform(projection.transform(scaler.transform(x))), num_features)
  readers = Readers(build.image_size, expression_weights, expression_bias, identity_weights,
                    identity_bias, report={})
  report = {"version": VERSION, "training_people": len(build.people("train")),
            "training_images": len(training.images),
            "training_intensities": list(TRAINING_INTENSITIES),
            **readers_report(readers, build, "test"),
            "fit_seconds": round(time.perf_counter() - start, 1)}
  return dataclasses.replace(readers, report=report)


def readers_report(readers: Readers, build: people_lib.FaceBuild, split: str) -> Dict:
  """How well `readers` read the people of `split` (see `fit_readers`)."""
  references = reference_images(build, split)
  report = {"people": len(build.people(split)), "split": split,
            "stated_intensity": people_lib.STATED_INTENSITY}
  dataset_images = {"dataset_all_intensities": 0.0,
                    "dataset_peak": people_lib.PEAK_INTENSITIES[0]}
  expression_accuracy, people_found = {}, {}
  person_of_row = np.repeat(np.arange(len(build.people(split))), build.images_per_subject)
  for name, min_intensity in dataset_images.items():
    drawn = build.dataset_factors(split, min_intensity)
    images = people_lib.render_factors(drawn, build.image_size)
    expression_accuracy[name] = float(np.mean(readers.read_expressions(images)
                                              == drawn.expression))
    people_found[name] = float(np.mean(readers.nearest_people(images, references)
                                       == person_of_row))
  renders = people_lib.draw_images(build, split, factors.SCORING_STREAM, 1,
                                   (people_lib.STATED_INTENSITY, people_lib.STATED_INTENSITY))
  expression_accuracy["renders_at_stated_intensity"] = float(np.mean(
      readers.read_expressions(renders.images) == renders.factors.expression))
  people_found["renders_at_stated_intensity"] = float(np.mean(
      readers.nearest_people(renders.images, references) == renders.person))
  average = people_lib.average_identity_renders(renders.factors.expression,
                                                renders.factors.intensity, build.image_size)
  people_found["average_identity"] = float(np.mean(
      readers.nearest_people(average, references) == renders.person))
  return {**report, "expression_accuracy": expression_accuracy,
          "identity_nearest_person": people_found}


def cache_path(cache_dir: str, build: people_lib.FaceBuild) -> str:
  """Where `load_readers` keeps the readers of `build` under `cache_dir`."""
  return os.path.join(cache_dir, f"readers_v{VERSION}_{build.key()}.npz")


def load_readers(build: people_lib.FaceBuild, cache_dir: str) -> Readers:
  """The readers of `build` from `cache_path(cache_dir, build)`, fitted and written there
  first if they are not (once per build: the readers of builds that differ only in
  min_intensity are the same)."""
  path = cache_path(cache_dir, build)
  if os.path.exists(path):
    return Readers.load(path)
  logging.info("fitting the independent readers of %s (once per build) into %s", build.key(), path)
  readers = fit_readers(build)
  readers.save(path)
  logging.info("readers: %s", json.dumps(readers.report))
  return readers

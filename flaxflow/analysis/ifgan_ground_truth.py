"""IF-GAN against the synthetic faces' ground truth: the target faces G is trained towards, how
much of the true expression change each keeps, and the test faces it is judged on.

What an ideal G draws for an input is known here: the average person (`mean_identity`), upright,
evenly lit and noiseless, with the input's expression at the input's intensity (the "average
identity" render, `scoring.average_identity_renders`). The paper's target, the per-class pixel
mean of the training faces, is a blur of it: the mean over people, poses, lights and
intensities. The targets (`TARGET_FACES`):

* "class_pixel_mean": the paper's, the pixel mean of each class's training images;
* "aligned_peak_class_mean": the paper's with its preprocessing: the mean of each class's
  peak-frame (intensity >= `PEAK_INTENSITY`) training faces, aligned (re-rendered upright, evenly
  lit, noiseless);
* "average_identity": beyond the paper (it needs a renderer), per image its average-identity
  render, interpolated from renders at `INTENSITY_LEVELS` intensities.

Each is a table (classes, levels, H, W, C) in [-1, 1]; a class target has one level, and
`flaxflow.gan.ifgan.target_faces` picks an image's target from its label and intensity.

Test faces (`face_sets`) are a split's own images in two regimes (`scoring.COLUMNS`): as the
build with peak frames draws them (intensities in (0.7, 1], "peak") and as the build with every
intensity does ("all_intensities"); the two differ only in how strongly each face shows its
expression, and every run is judged on the same images whichever build it trained on.
"""

import dataclasses
from typing import Dict, Mapping

import numpy as np
from scipy import stats

from flaxflow import scoring
from flaxflow.data.synthetic_faces import factors, renderer
from flaxflow.gan import pixels

TARGET_FACES = ("class_pixel_mean", "aligned_peak_class_mean", "average_identity")
PEAK_INTENSITY = scoring.PEAK_INTENSITIES[0]
INTENSITY_LEVELS = 17  # Linear interpolation between them is within 1e-4 L1 of the render.
NUM_CLASSES = len(factors.CLASS_NAMES)


def full_intensities(labels: np.ndarray) -> np.ndarray:
  """float32 (N,): 1 for every expression, 0 for neutral."""
  return np.where(np.asarray(labels) == factors.NEUTRAL, 0.0, 1.0).astype(np.float32)


def average_identity_table(side: int, levels: int = INTENSITY_LEVELS) -> np.ndarray:
  """float32 (classes, levels, side, side, 1) in [-1, 1]: every class's average-identity render
  at `levels` intensities evenly from 0 to 1 (neutral at 0 throughout)."""
  intensities = np.tile(np.linspace(0, 1, levels, dtype=np.float32), NUM_CLASSES)
  labels = np.repeat(np.arange(NUM_CLASSES), levels)
  intensities[labels == factors.NEUTRAL] = 0.0
  renders = scoring.average_identity_renders(labels, intensities, side)
  return np.asarray(pixels.from_uint8(renders)).reshape(NUM_CLASSES, levels, side, side, 1)


def aligned_peak_class_means(drawn: factors.Factors, side: int,
                             peak_intensity: float = PEAK_INTENSITY) -> np.ndarray:
  """float32 (classes, 1, side, side, 1) in [-1, 1]: per class, the mean of the faces of `drawn`
  (the training split's factors) at intensity >= `peak_intensity` (every neutral one), each
  re-rendered upright, evenly lit and noiseless (the paper aligns its faces on the eyes and
  nose before averaging)."""
  labels = drawn.expression
  peak = (drawn.intensity >= peak_intensity) | (labels == factors.NEUTRAL)
  missing = [factors.CLASS_NAMES[label] for label in range(NUM_CLASSES)
             if not np.any(peak & (labels == label))]
  if missing:
    raise ValueError(f"the training split has no peak-frame (intensity >= {peak_intensity}) "
                     f"images of {', '.join(missing)}: the aligned peak targets need some of each")
  aligned = np.asarray(pixels.from_uint8(renderer.render(
      drawn.identity[peak], labels[peak], drawn.intensity[peak],
      np.tile(factors.NEUTRAL_NUISANCE, (int(peak.sum()), 1)), side)))
  return np.stack([aligned[labels[peak] == label].mean(axis=0)
                   for label in range(NUM_CLASSES)])[:, None].astype(np.float32)


def expression_change_share(targets: np.ndarray, truths: np.ndarray,
                            labels: np.ndarray) -> float:
  """How much of the true expression change the `targets` keep: the least-squares factor s in
  target change ~ s * true change, pooled over the non-neutral examples, each change taken from
  the mean neutral face of its own kind (targets or truths). 1: the change in full; 0: none (a
  target that is the same face for every class). Arrays (N, H, W, C) of one scale; neutral and
  non-neutral examples needed."""
  labels = np.asarray(labels)
  neutral, expressive = labels == factors.NEUTRAL, labels != factors.NEUTRAL
  if not neutral.any() or not expressive.any():
    raise ValueError("labels: expected neutral and non-neutral examples")
  targets, truths = (np.asarray(images, np.float64).reshape(len(labels), -1)
                     for images in (targets, truths))
  target_change = targets[expressive] - targets[neutral].mean(axis=0)
  true_change = truths[expressive] - truths[neutral].mean(axis=0)
  return float(np.sum(target_change * true_change) / np.sum(true_change ** 2))


@dataclasses.dataclass(frozen=True)
class FaceSet:
  """Test faces with what an ideal G draws for each: uint8 "image" and "truth" (N, H, W, 1),
  "label", "intensity" and "person" (an index among the split's people), each (N,)."""
  image: np.ndarray
  truth: np.ndarray
  label: np.ndarray
  intensity: np.ndarray
  person: np.ndarray


def face_sets(build: scoring.FaceBuild, split: str) -> Dict[str, FaceSet]:
  """{regime: FaceSet} of `scoring.COLUMNS`: the images of `split` as the build of that
  regime's lowest intensity draws them, with their average-identity renders."""
  sets = {}
  for regime, (lowest, _) in scoring.COLUMNS.items():
    drawn = build.dataset_factors(split, lowest)
    sets[regime] = FaceSet(
        image=renderer.render(*drawn.as_render_args(), build.image_size),
        truth=scoring.average_identity_renders(drawn.expression, drawn.intensity,
                                               build.image_size),
        label=drawn.expression, intensity=drawn.intensity,
        person=np.repeat(np.arange(len(build.people(split))), build.images_per_subject))
  return sets


def identity_grid(people: np.ndarray, nuisance: np.ndarray, lowest: float, side: int,
                  seed: int = 0) -> np.ndarray:
  """uint8 (classes * poses, people, side, side, 1): every person of `people` (K, identity)
  with every expression under every pose of `nuisance` (poses, nuisance); within a row only the
  person changes (one intensity per row, uniform in (`lowest`, 1], from `seed`)."""
  rows = NUM_CLASSES * len(nuisance)
  labels = np.repeat(np.arange(NUM_CLASSES), len(nuisance))
  draw = np.random.default_rng(seed).random(rows)
  intensity = np.where(labels == factors.NEUTRAL, 0.0, 1.0 - draw * (1.0 - lowest))
  count = len(people)
  images = renderer.render(np.tile(people, (rows, 1)), np.repeat(labels, count),
                           np.repeat(intensity, count).astype(np.float32),
                           np.repeat(np.tile(nuisance, (NUM_CLASSES, 1)), count, axis=0), side)
  return images.reshape(rows, count, side, side, 1)


def between_person_variance(grid: np.ndarray) -> float:
  """The variance across people (axis 1) of `grid` (rows, people, ...), summed over pixels and
  averaged over rows: how much an image changes with the person alone."""
  values = np.asarray(grid, np.float64).reshape(grid.shape[0], grid.shape[1], -1)
  return float(values.var(axis=1).sum(axis=-1).mean())


def identity_variance_ratio(grid: np.ndarray, generated: np.ndarray) -> float:
  """G(x)'s between-person variance over x's on the same `grid` (`identity_grid`): 0 when G
  draws the same face for every person, 1 when G keeps as much of the person as x shows."""
  return between_person_variance(generated) / between_person_variance(grid)


def other_class_indices(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """(N,): for each example, a random example of another class (the same draw every time)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = np.empty(len(labels), int)
  for label in np.unique(labels):
    rows, others = np.flatnonzero(labels == label), np.flatnonzero(labels != label)
    if not len(others):
      raise ValueError("labels: expected examples of at least two classes")
    chosen[rows] = rng.choice(others, len(rows))
  return chosen


def other_labels(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """(N,): for each label a random other class (the same draw every time)."""
  offsets = np.random.default_rng(seed).integers(1, NUM_CLASSES, len(labels))
  return (np.asarray(labels) + offsets) % NUM_CLASSES


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray) -> Mapping[str, float]:
  """McNemar's exact test of two classifiers on the same examples: "first_only" and
  "second_only" (the examples only one gets right) and the two-sided binomial "p_value" of the
  split of those discordant examples being this uneven under equal accuracy."""
  first_correct, second_correct = (np.asarray(v, bool) for v in (first_correct, second_correct))
  if first_correct.shape != second_correct.shape:
    raise ValueError(f"first_correct {first_correct.shape} and second_correct "
                     f"{second_correct.shape}: expected the same examples")
  first_only = int(np.sum(first_correct & ~second_correct))
  second_only = int(np.sum(~first_correct & second_correct))
  discordant = first_only + second_only
  p_value = 1.0 if discordant == 0 else float(
      stats.binomtest(first_only, discordant, 0.5).pvalue)
  return {"first_only": first_only, "second_only": second_only, "p_value": p_value}

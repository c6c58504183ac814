"""IF-GAN against the synthetic faces' ground truth: the target faces G is trained towards, how
much of the true expression change each keeps, and what G removes and keeps on test people.

What an ideal G draws for an input is known here: the average person (`mean_identity`), upright,
evenly lit and noiseless, with the input's expression at the input's intensity (the "average
identity" render). The paper's target, the per-class pixel mean of the training faces, is a
blur of it: the mean over people, poses, lights and intensities. The targets (`TARGET_FACES`):

* "class_pixel_mean": the paper's, the pixel mean of each class's training images;
* "aligned_peak_class_mean": the paper's with its preprocessing: the mean of each class's
  peak-frame (intensity >= `PEAK_INTENSITY`) training faces, aligned (re-rendered upright, evenly
  lit, noiseless);
* "average_identity": beyond the paper (it needs a renderer), per image its average-identity
  render, interpolated from renders at `INTENSITY_LEVELS` intensities.

Each is a table (classes, levels, H, W, C) in [-1, 1]; a class target has one level, and
`flaxflow.gan.ifgan.target_faces` picks an image's target from its label and intensity.

Test faces are scored in two regimes (`REGIMES`): the test split's people, expressions, poses and
lights, redrawn at intensities uniform in (0.7, 1] ("peak", the papers' peak frames) and in
(0, 1] ("all_intensities"), the same draw for every run, so that runs can be compared image by
image.
"""

import dataclasses
from typing import Callable, Dict, Mapping, Tuple

import numpy as np
from scipy import stats

from flaxflow.analysis import ground_truth
from flaxflow.data.synthetic_faces import factors, renderer

TARGET_FACES = ("class_pixel_mean", "aligned_peak_class_mean", "average_identity")
PEAK_INTENSITY = 0.7
REGIMES = {"peak": PEAK_INTENSITY, "all_intensities": 0.0}  # name: lowest intensity
INTENSITY_LEVELS = 17  # Linear interpolation between them is within 1e-4 L1 of the render.
# The numeric features of a synthetic face that the targets and the test sets are drawn from.
FACTOR_FEATURES = ("identity", "intensity", "nuisance")

Images = np.ndarray
Reader = Callable[[np.ndarray], np.ndarray]


def to_unit(images: np.ndarray) -> np.ndarray:
  """uint8 images as floats in [-1, 1) (bin centres), as the GAN sees them."""
  return (np.asarray(images, np.float32) + 0.5) / 128.0 - 1.0


def average_identity_renders(labels: np.ndarray, intensities: np.ndarray,
                             side: int) -> np.ndarray:
  """uint8 (N, side, side, 1): the average person, upright, evenly lit and noiseless, with each
  expression at its intensity: what an ideal IF-GAN generator draws."""
  count = len(labels)
  return renderer.render(np.tile(factors.mean_identity(), (count, 1)), np.asarray(labels),
                         np.asarray(intensities, np.float32),
                         np.tile(factors.NEUTRAL_NUISANCE, (count, 1)), side)


def average_identity_table(num_classes: int, side: int,
                           levels: int = INTENSITY_LEVELS) -> np.ndarray:
  """float32 (classes, levels, side, side, 1) in [-1, 1): every class's average-identity render
  at `levels` intensities evenly from 0 to 1 (neutral at 0 throughout)."""
  intensities = np.tile(np.linspace(0, 1, levels, dtype=np.float32), num_classes)
  labels = np.repeat(np.arange(num_classes), levels)
  intensities[labels == factors.NEUTRAL] = 0.0
  renders = average_identity_renders(labels, intensities, side)
  return to_unit(renders).reshape(num_classes, levels, side, side, 1)


def aligned_peak_class_means(identity: np.ndarray, labels: np.ndarray, intensities: np.ndarray,
                             side: int, num_classes: int,
                             peak_intensity: float = PEAK_INTENSITY) -> np.ndarray:
  """float32 (classes, 1, side, side, 1) in [-1, 1): per class, the mean of its training faces
  at intensity >= `peak_intensity` (every neutral one), each re-rendered upright, evenly lit and
  noiseless (the paper's faces are aligned on the eyes and nose before averaging)."""
  peak = (intensities >= peak_intensity) | (labels == factors.NEUTRAL)
  missing = [label for label in range(num_classes) if not np.any(peak & (labels == label))]
  if missing:
    raise ValueError(f"the training split has no peak-frame (intensity >= {peak_intensity}) "
                     f"images of classes {missing}: the aligned peak targets need some of each")
  aligned = to_unit(renderer.render(
      identity[peak], labels[peak], intensities[peak],
      np.tile(factors.NEUTRAL_NUISANCE, (int(peak.sum()), 1)), side))
  return np.stack([aligned[labels[peak] == label].mean(axis=0)
                   for label in range(num_classes)])[:, None].astype(np.float32)


def full_intensities(labels: np.ndarray) -> np.ndarray:
  """float32 (N,): 1 for every expression, 0 for neutral."""
  return np.where(np.asarray(labels) == factors.NEUTRAL, 0.0, 1.0).astype(np.float32)


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
  "label", "intensity" and "person" (an index among the set's people), each (N,)."""
  image: Images
  truth: Images
  label: np.ndarray
  intensity: np.ndarray
  person: np.ndarray


def regime_intensities(labels: np.ndarray, lowest: float, seed: int = 0) -> np.ndarray:
  """float32 (N,): for each non-neutral label an intensity uniform in (`lowest`, 1], from one
  uniform draw per image that every regime shares (so an image is at its peak frame's
  intensity order in every regime); 0 for neutral."""
  draw = np.random.default_rng(seed).random(len(labels))
  return np.where(np.asarray(labels) == factors.NEUTRAL, 0.0,
                  1.0 - draw * (1.0 - lowest)).astype(np.float32)


def persons(identity: np.ndarray) -> np.ndarray:
  """(N,): each row's index among the distinct identity vectors, in order of appearance."""
  _, first, inverse = np.unique(identity, axis=0, return_index=True, return_inverse=True)
  order = np.argsort(np.argsort(first))
  return order[inverse.reshape(-1)]


def regime_sets(identity: np.ndarray, labels: np.ndarray, nuisance: np.ndarray,
                side: int) -> Dict[str, FaceSet]:
  """{regime: FaceSet} of the faces with these factors, redrawn at each regime's intensities."""
  labels = np.asarray(labels)
  sets = {}
  for name, lowest in REGIMES.items():
    intensity = regime_intensities(labels, lowest)
    sets[name] = FaceSet(
        image=renderer.render(identity, labels, intensity, nuisance, side),
        truth=average_identity_renders(labels, intensity, side), label=labels,
        intensity=intensity, person=persons(identity))
  return sets


def identity_grid(people: np.ndarray, nuisance: np.ndarray, num_classes: int, lowest: float,
                  side: int, seed: int = 1) -> np.ndarray:
  """uint8 (classes * poses, people, side, side, 1): every person of `people` (K, identity)
  with every expression under every pose of `nuisance` (poses, nuisance); within a row only the
  person changes (one intensity per row, uniform in (`lowest`, 1])."""
  rows = num_classes * len(nuisance)
  labels = np.repeat(np.arange(num_classes), len(nuisance))
  intensity = regime_intensities(labels, lowest, seed)
  count = len(people)
  poses = np.tile(nuisance, (num_classes, 1))
  images = renderer.render(np.tile(people, (rows, 1)), np.repeat(labels, count),
                           np.repeat(intensity, count), np.repeat(poses, count, axis=0), side)
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


def other_labels(labels: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
  """(N,): for each label a random other class (the same draw every time)."""
  offsets = np.random.default_rng(seed).integers(1, num_classes, len(labels))
  return (np.asarray(labels) + offsets) % num_classes


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def against_truth(images: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
  """(mean L1 in [0, 1], mean SSIM) of uint8 `images` against the average-identity `truth`."""
  return (float(ground_truth.l1_errors(images, truth).mean()),
          float(ground_truth.ssim_scores(images, truth).mean()))


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

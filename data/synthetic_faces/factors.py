"""The ground-truth factors of a synthetic face and how the dataset draws them from seeds.

A face is four factors:

* identity: a float32 vector over `IDENTITY_FIELDS`, one per person (subject);
* expression: a class index into `CLASS_NAMES` (EmotionSet's 7 classes, same order);
* intensity: a float in [0, 1]; 0 for neutral, in (min_intensity, 1] for the other classes
  (`min_intensity` 0 by default: onset to peak; near 1: peak frames only);
* nuisance: a float32 vector over `NUISANCE_FIELDS`, one per image (pose, light, noise).

The class and intensity become facial actions (`expression_actions`): intensity times the
class's prototype over `ACTION_FIELDS`. Every draw is a pure function of (dataset seed,
subject number, image number), so any image's factors can be drawn again (`image_factors`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from flaxflow.data.sources.records import CLASS_NAMES

# Identity fields and the uniform range each is drawn from. Lengths are in the face frame,
# where the image spans [-1, 1] on both axes; tones are grey levels in [0, 1].
IDENTITY_RANGES = {
    "head_width": (0.52, 0.68),  # half-width of the head
    "head_height": (0.70, 0.84),  # half-height of the head
    "jaw_taper": (0.0, 0.4),  # how much the head narrows towards the chin
    "skin_tone": (0.45, 0.88),
    "eye_size": (0.085, 0.125),  # half-width of an eye
    "eye_spacing": (0.20, 0.28),  # distance of each eye from the middle
    "eye_level": (-0.10, -0.04),
    "brow_thickness": (0.022, 0.05),
    "nose_length": (0.18, 0.26),  # from eye level to the nostrils
    "nose_width": (0.05, 0.11),
    "mouth_width": (0.17, 0.28),  # half-width of the mouth at rest
    "hair_tone": (0.04, 0.9),  # black to fair
    "hair_length": (0.0, 1.0),  # 0 ends above the ears, 1 falls past the chin
    "hair_volume": (0.0, 1.0),  # how far the hair stands off the head
    "hairline": (0.0, 1.0),  # 0 high forehead, 1 a fringe down to the brows
    "hair_part": (-1.0, 1.0),  # where the fringe parts, left to right
    "ear_size": (0.0, 1.0),  # 0 flat small ears, 1 large protruding ones
}
GLASSES_PROBABILITY = 0.3
IDENTITY_FIELDS = (*IDENTITY_RANGES, "glasses")  # glasses: 0.0 or 1.0

# Facial actions: signed amounts, about [-1, 1], at full intensity.
ACTION_FIELDS = (
    "brow_raise",  # + raised, - lowered
    "brow_inner",  # + inner ends up (worry), - inner ends down (frown)
    "eye_open",  # + wide, - narrowed
    "lid_tension",  # lower lid pushed up
    "nose_wrinkle",
    "lip_corner",  # + pulled up (smile), - pulled down
    "mouth_open",  # jaw drop
    "mouth_stretch",  # + wide, - pressed or rounded
    "upper_lip_raise",
)
EXPRESSION_PROTOTYPES = {  # class name: actions at intensity 1, in ACTION_FIELDS order
    "anger": (-1.0, -1.0, 0.1, 0.9, 0.2, -0.4, 0.0, -0.6, 0.0),
    "disgust": (-0.4, -0.2, -0.3, 0.6, 1.0, -0.6, 0.15, 0.1, 1.0),
    "fear": (0.6, 0.8, 1.0, 0.2, 0.0, -0.3, 0.25, 1.0, 0.0),
    "happy": (0.1, 0.0, -0.1, 0.7, 0.0, 1.0, 0.4, 0.5, 0.0),
    "neutral": (0.0,) * len(ACTION_FIELDS),
    "sad": (-0.1, 1.0, -0.45, 0.0, 0.0, -1.0, 0.0, -0.1, 0.0),
    "surprise": (1.0, 0.2, 1.0, 0.0, 0.0, 0.0, 1.0, -0.45, 0.0),
}
PROTOTYPES = np.array([EXPRESSION_PROTOTYPES[name] for name in CLASS_NAMES], np.float32)
NEUTRAL = CLASS_NAMES.index("neutral")

# Nuisance fields and the uniform range each is drawn from.
NUISANCE_RANGES = {
    "rotation": (-0.12, 0.12),  # radians, about the image centre
    "shift_x": (-0.06, 0.06),  # in the image frame [-1, 1]
    "shift_y": (-0.06, 0.06),
    "scale": (0.93, 1.07),
    "light_angle": (0.0, 2 * math.pi),  # direction the lighting gradient rises towards
    "light_strength": (0.0, 0.25),  # relative brightness change from centre to edge
    "background": (0.2, 0.8),  # grey level behind the face
    "noise_std": (0.0, 0.025),  # Gaussian sensor noise, in grey levels of [0, 1]
}
# The noise is drawn from its own integer seed, kept below 2**24 so that float32 holds it.
NOISE_SEED_LIMIT = 2**24
NUISANCE_FIELDS = (*NUISANCE_RANGES, "noise_seed")
NEUTRAL_NUISANCE = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0], np.float32)
NEUTRAL_NUISANCE.flags.writeable = False

# A build's people are numbered by split, in this order (`split_subjects`).
SPLITS = ("train", "validation", "test")

# Seed-sequence tags that keep the identity and image streams apart. The dataset draws from the
# first two; evaluation draws images of its own from the others (`flaxflow.scoring`): its readers'
# training images, the images it scores and its reference images of each person.
_IDENTITY_STREAM, _IMAGE_STREAM = 0, 1
READER_STREAM, SCORING_STREAM, REFERENCE_STREAM = 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Factors:
  """The factors of N images; `render(*factors.as_render_args(), size)` draws them."""

  identity: np.ndarray  # float32 (N, len(IDENTITY_FIELDS))
  expression: np.ndarray  # int32 (N,), index into CLASS_NAMES
  intensity: np.ndarray  # float32 (N,)
  nuisance: np.ndarray  # float32 (N, len(NUISANCE_FIELDS))

  def __len__(self) -> int:
    return len(self.expression)

  def __getitem__(self, index) -> "Factors":
    return Factors(*(field[index] for field in self.as_render_args()))

  def as_render_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return self.identity, self.expression, self.intensity, self.nuisance

  def at_full_intensity(self) -> "Factors":
    """The same images with every expression at intensity 1 (neutral stays 0)."""
    intensity = np.where(self.expression == NEUTRAL, 0, 1).astype(np.float32)
    return Factors(self.identity, self.expression, intensity, self.nuisance)


def mean_identity() -> np.ndarray:
  """The average person: every identity range's midpoint, without glasses."""
  middle = [(low + high) / 2 for low, high in IDENTITY_RANGES.values()]
  return np.array([*middle, 0.0], np.float32)


def split_subjects(subjects, split: str) -> range:
  """The numbers of the people of `split` when `subjects` ({split: number of people}) are
  numbered train first, then validation, then test, so that no person is in two splits."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
  start = sum(subjects[earlier] for earlier in SPLITS[:SPLITS.index(split)])
  return range(start, start + subjects[split])


def draw_identity(seed: int, subject: int) -> np.ndarray:
  """The identity vector of person `subject` of the dataset drawn with `seed`."""
  rng = np.random.default_rng([seed, _IDENTITY_STREAM, subject])
  continuous = [rng.uniform(low, high) for low, high in IDENTITY_RANGES.values()]
  glasses = float(rng.random() < GLASSES_PROBABILITY)
  return np.array([*continuous, glasses], np.float32)


def draw_image(seed: int, subject: int, image: int,
               min_intensity: float = 0.0) -> tuple[int, float, np.ndarray]:
  """Expression class, intensity and nuisance vector of image `image` of person `subject`;
  the intensity of a non-neutral class is uniform in (min_intensity, 1].

  Every value is drawn whatever the class, so the nuisance does not depend on it, and an image
  differs between two `min_intensity` only in how strongly it shows its expression.
  """
  rng = np.random.default_rng([seed, _IMAGE_STREAM, subject, image])
  expression = int(rng.integers(len(CLASS_NAMES)))
  intensity = 1.0 - rng.random() * (1.0 - min_intensity)
  nuisance = [rng.uniform(low, high) for low, high in NUISANCE_RANGES.values()]
  noise_seed = int(rng.integers(NOISE_SEED_LIMIT))
  intensity = 0.0 if expression == NEUTRAL else intensity
  return expression, intensity, np.array([*nuisance, noise_seed], np.float32)


def draw_nuisances(rng: np.random.Generator, count: int) -> np.ndarray:
  """float32 (count, len(NUISANCE_FIELDS)): nuisance vectors from the ranges `draw_image` draws
  from, field by field for all `count` images at once (not the dataset's own draws)."""
  fields = [rng.uniform(low, high, count) for low, high in NUISANCE_RANGES.values()]
  fields.append(rng.integers(NOISE_SEED_LIMIT, size=count))
  return np.stack(fields, axis=1).astype(np.float32)


def image_factors(seed: int, subjects, images_per_subject: int,
                  min_intensity: float = 0.0) -> Factors:
  """The factors of every image of `subjects`, subject-major: image j of the i-th subject
  is row i * images_per_subject + j. Intensities as `draw_image` draws them."""
  identity, expression, intensity, nuisance = [], [], [], []
  for subject in subjects:
    person = draw_identity(seed, subject)
    for image in range(images_per_subject):
      label, amount, conditions = draw_image(seed, subject, image, min_intensity)
      identity.append(person)
      expression.append(label)
      intensity.append(amount)
      nuisance.append(conditions)
  return Factors(identity=np.array(identity, np.float32).reshape(-1, len(IDENTITY_FIELDS)),
                 expression=np.array(expression, np.int32),
                 intensity=np.array(intensity, np.float32),
                 nuisance=np.array(nuisance, np.float32).reshape(-1, len(NUISANCE_FIELDS)))


def expression_actions(expression, intensity) -> np.ndarray:
  """Facial actions (..., len(ACTION_FIELDS)) of classes `expression` at `intensity`."""
  return (np.asarray(intensity, np.float32)[..., np.newaxis]
          * PROTOTYPES[np.asarray(expression)])

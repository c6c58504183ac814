"""A synthetic-faces build's people, and the images scoring draws of them.

Scoring never reads the dataset's files: every image it needs is rendered from the factors of
the build's people (`FaceBuild`), from seed streams of its own (`factors.READER_STREAM`,
`SCORING_STREAM`, `REFERENCE_STREAM`), so that every method is judged on the same images
whichever build it trained on. Two builds that differ only in `min_intensity` (the default run's
peak frames, the GANs' every intensity) have the same people.
"""

import dataclasses
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from flaxflow.data.synthetic_faces import factors
from flaxflow.data.synthetic_faces.renderer import render

NUM_CLASSES = len(factors.CLASS_NAMES)
# The intensities of peak frames, as the papers take them from CK+ and MMI sequences.
PEAK_INTENSITIES = (0.7, 1.0)
ALL_INTENSITIES = (0.0, 1.0)
# The intensity a target's ground truth and the reference images are rendered at: the middle of
# the peak frames. A transfer's condition names a class, not an intensity, and the papers score
# peak frames.
STATED_INTENSITY = 0.85


@dataclasses.dataclass(frozen=True)
class FaceBuild:
  """The options of a synthetic-faces build that decide its people and images (those of
  `data.synthetic_faces.builder.make_config`; `from_options` reads them off its config)."""

  image_size: int
  seed: int
  subjects: Mapping[str, int]  # {split: number of people} for each of factors.SPLITS
  images_per_subject: int
  min_intensity: float = 0.0

  def __post_init__(self):
    if set(self.subjects) != set(factors.SPLITS):
      raise ValueError(f"subjects={dict(self.subjects)!r}: expected a number of people for each "
                       f"of {', '.join(factors.SPLITS)}")
    if self.image_size % 2:
      raise ValueError(f"image_size={self.image_size}: expected an even side")

  @classmethod
  def from_options(cls, options) -> "FaceBuild":
    """The build of any object with the fields' names as attributes (a builder config)."""
    return cls(**{field.name: getattr(options, field.name)
                  for field in dataclasses.fields(cls)})

  def people(self, split: str) -> range:
    """The subject numbers of the people of `split`."""
    return factors.split_subjects(self.subjects, split)

  def identities(self, split: str) -> np.ndarray:
    """float32 (people, len(IDENTITY_FIELDS)): the identity of each person of `split`."""
    return np.stack([factors.draw_identity(self.seed, subject) for subject in self.people(split)])

  def dataset_factors(self, split: str, min_intensity: Optional[float] = None
                      ) -> factors.Factors:
    """The factors of the images of `split` as this build draws them (with `min_intensity`
    instead of its own if given: the images of the build that differs only there); `render`
    redraws them bit for bit."""
    min_intensity = self.min_intensity if min_intensity is None else min_intensity
    return factors.image_factors(self.seed, self.people(split), self.images_per_subject,
                                 min_intensity)

  def key(self) -> str:
    """A name of the options that decide the people (not `min_intensity`)."""
    people = ".".join(str(self.subjects[split]) for split in factors.SPLITS)
    return f"{self.image_size}_seed{self.seed}_subjects{people}_images{self.images_per_subject}"


@dataclasses.dataclass(frozen=True)
class Drawn:
  """Images of a build's people: their factors, which person of the split each shows (0..K-1)
  and the pixels."""

  factors: factors.Factors
  person: np.ndarray  # int (N,)
  images: np.ndarray  # uint8 (N, H, W, 1)


def draw_images(build: FaceBuild, split: str, stream: int, per_class: int,
                intensities: Tuple[float, float]) -> Drawn:
  """`per_class` images of every class of each person of `split`, person by person, with
  nuisances drawn afresh from the seed stream (build seed, `stream`, subject) and intensities
  uniform in (intensities[0], intensities[1]] (neutral 0).

  The draws do not depend on `intensities`: two calls that differ only there give the same
  images but for how strongly they show their expression.
  """
  low, high = intensities
  if not 0 <= low <= high <= 1:
    raise ValueError(f"intensities={intensities}: expected 0 <= low <= high <= 1")
  rows = []
  for subject in build.people(split):
    rng = np.random.default_rng([build.seed, stream, subject])
    count = NUM_CLASSES * per_class
    expression = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), per_class)
    intensity = high - rng.random(count) * (high - low)
    intensity = np.where(expression == factors.NEUTRAL, 0, intensity).astype(np.float32)
    rows.append((expression, intensity, factors.draw_nuisances(rng, count)))
  expression, intensity, nuisance = (np.concatenate(parts) for parts in zip(*rows))
  per_person = NUM_CLASSES * per_class
  person = np.repeat(np.arange(len(build.people(split))), per_person)
  drawn = factors.Factors(identity=build.identities(split)[person], expression=expression,
                          intensity=intensity, nuisance=nuisance)
  return Drawn(factors=drawn, person=person, images=render_factors(drawn, build.image_size))


def render_factors(drawn: factors.Factors, size: int) -> np.ndarray:
  return render(*drawn.as_render_args(), size)


def with_expressions(drawn: factors.Factors, expressions: Sequence[int],
                     intensity: float) -> factors.Factors:
  """Every image of `drawn` once per class of `expressions`, image-major (row i * len + j is
  image i with expression j), at `intensity` (neutral 0): the same person, pose, light and
  noise redrawn with each expression."""
  expressions = np.asarray(expressions, np.int32)
  count, classes = len(drawn), len(expressions)
  target = np.tile(expressions, count)
  return factors.Factors(
      identity=np.repeat(drawn.identity, classes, axis=0), expression=target,
      intensity=np.where(target == factors.NEUTRAL, 0, intensity).astype(np.float32),
      nuisance=np.repeat(drawn.nuisance, classes, axis=0))


def without_noise(drawn: factors.Factors) -> factors.Factors:
  """The same images without sensor noise."""
  nuisance = drawn.nuisance.copy()
  nuisance[:, factors.NUISANCE_FIELDS.index("noise_std")] = 0
  return dataclasses.replace(drawn, nuisance=nuisance)


def average_identity_renders(labels: np.ndarray, intensities: np.ndarray,
                             size: int) -> np.ndarray:
  """uint8 (N, size, size, 1): the average person (`mean_identity`), upright, evenly lit and
  noiseless, with each expression at its intensity: what an ideal IF-GAN generator draws."""
  count = len(labels)
  return render(np.tile(factors.mean_identity(), (count, 1)), np.asarray(labels),
                np.asarray(intensities, np.float32),
                np.tile(factors.NEUTRAL_NUISANCE, (count, 1)), size)

"""The synthetic-faces TFDS builder: rendered faces with their ground-truth factors.

Nothing is downloaded: every image is rendered from factors drawn from (seed, subject,
image), so a build is cheap and `data.datasets.load` builds it on first use. People are
numbered train first, then validation, then test, so no person is in two splits. TFDS writes
into a temporary folder that becomes the dataset only when everything succeeded, so a failed
or killed build leaves nothing that loads.

Bump VERSION whenever the renderer or the factor draws change, so that cached builds of the
old faces are not loaded as the new ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from flaxflow.data import features
from flaxflow.data import tf_cpu  # noqa: F401  (its import hides GPUs before TFDS uses TF)
from flaxflow.data.synthetic_faces import factors
from flaxflow.data.synthetic_faces.renderer import render

SPLITS = factors.SPLITS
IMAGE_SIZES = (32, 48, 64)
DEFAULT_IMAGE_SIZE = 48
DEFAULT_SUBJECTS = {"train": 120, "validation": 20, "test": 20}
DEFAULT_IMAGES_PER_SUBJECT = 64
DEFAULT_SEED = 0
DEFAULT_MIN_INTENSITY = 0.0
# The element features beyond image, label and subject.
FACTOR_FEATURES = ("identity", "intensity", "nuisance", "index")


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """Square faces of `image_size` pixels; `subjects` people per split, each in
  `images_per_subject` images, all drawn from `seed`, expressions at intensities in
  (`min_intensity`, 1]."""

  image_size: int = DEFAULT_IMAGE_SIZE
  seed: int = DEFAULT_SEED
  subjects: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_SUBJECTS))
  images_per_subject: int = DEFAULT_IMAGES_PER_SUBJECT
  min_intensity: float = DEFAULT_MIN_INTENSITY

  def subject_numbers(self, split: str) -> range:
    """The people of `split`: train's first, then validation's, then test's."""
    return factors.split_subjects(self.subjects, split)


def make_config(image_size: int = DEFAULT_IMAGE_SIZE, *, seed: int = DEFAULT_SEED,
                subjects=None, images_per_subject: int = DEFAULT_IMAGES_PER_SUBJECT,
                min_intensity: float = DEFAULT_MIN_INTENSITY) -> SyntheticFacesConfig:
  """A checked config. The defaults are named by the image size alone ("48"); any other
  seed or size gets a name of its own, so that differently sized builds never share a cache.

  Args:
    image_size: one of IMAGE_SIZES.
    seed: a non-negative integer; the faces are a function of it.
    subjects: {split: number of people} for each of SPLITS (default DEFAULT_SUBJECTS).
    images_per_subject: images of each person.
    min_intensity: in [0, 1); every non-neutral expression is drawn at an intensity in
      (min_intensity, 1]. 0: from barely visible onsets to peaks; e.g. 0.7: peak frames, as
      the papers take from CK+ and MMI sequences.
  """
  if image_size not in IMAGE_SIZES or isinstance(image_size, bool):
    raise ValueError(f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, "
                     f"got {image_size!r}")
  subjects = dict(DEFAULT_SUBJECTS if subjects is None else subjects)
  if set(subjects) != set(SPLITS):
    raise ValueError(f"subjects must give a number of people for each of "
                     f"{', '.join(SPLITS)}, got {subjects!r}")
  for argument, value in (("seed", seed), ("images_per_subject", images_per_subject),
                          *((f"subjects[{split!r}]", subjects[split]) for split in SPLITS)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (
        0 if argument == "seed" else 1):
      least = "non-negative" if argument == "seed" else "positive"
      raise ValueError(f"{argument} must be a {least} integer, got {value!r}")
  if (isinstance(min_intensity, bool) or not isinstance(min_intensity, (int, float, np.number))
      or not 0 <= min_intensity < 1):
    raise ValueError(f"min_intensity must be a number in [0, 1), got {min_intensity!r}")
  subjects = {split: int(subjects[split]) for split in SPLITS}
  name = str(image_size)
  if (seed, subjects, images_per_subject) != (DEFAULT_SEED, DEFAULT_SUBJECTS,
                                              DEFAULT_IMAGES_PER_SUBJECT):
    people = ".".join(str(subjects[split]) for split in SPLITS)
    name = f"{image_size}_seed{seed}_subjects{people}_images{images_per_subject}"
  if min_intensity != DEFAULT_MIN_INTENSITY:
    name += f"_min_intensity{float(min_intensity):g}"
  return SyntheticFacesConfig(
      name=name, image_size=image_size, seed=int(seed), subjects=subjects,
      images_per_subject=int(images_per_subject), min_intensity=float(min_intensity),
      description=f"{image_size}x{image_size} grayscale synthetic faces.")


def split_factors(config: SyntheticFacesConfig, split: str) -> factors.Factors:
  """The factors of every image of `split`; row i belongs to the element whose `index` is
  i. `render(*split_factors(config, split)[i].as_render_args(), config.image_size)` redraws
  that element's image exactly."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
  return factors.image_factors(config.seed, config.subject_numbers(split),
                               config.images_per_subject, config.min_intensity)


def subject_name(subject: int) -> str:
  return f"synthetic_faces/{subject:04d}"


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
  """Rendered faces in EmotionSet's 7 classes, with identity, expression and nuisance
  factors."""

  # TFDS derives both paths from the module's name, which names the installed package
  # (flaxflow.data...), not the repository folder (data/...) this file is in.
  pkg_dir_path = epath.Path(__file__).parent
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Faces of implicit shapes; 120/20/20 people, 64 images each."}
  BUILDER_CONFIGS = [make_config(size) for size in IMAGE_SIZES]
  DEFAULT_BUILDER_CONFIG_NAME = str(DEFAULT_IMAGE_SIZE)

  def _info(self) -> tfds.core.DatasetInfo:
    side = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **features.face_features(side),
            "identity": tfds.features.Tensor(shape=(len(factors.IDENTITY_FIELDS),),
                                             dtype=np.float32),
            "intensity": tfds.features.Scalar(dtype=np.float32),
            "nuisance": tfds.features.Tensor(shape=(len(factors.NUISANCE_FIELDS),),
                                             dtype=np.float32),
            "index": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    drawn = split_factors(config, split)
    images = render(*drawn.as_render_args(), config.image_size)
    people = np.repeat(np.asarray(config.subject_numbers(split)), config.images_per_subject)
    for index, (image, subject) in enumerate(zip(images, people)):
      yield index, {"image": image, "label": int(drawn.expression[index]),
                    "subject": subject_name(int(subject)), "identity": drawn.identity[index],
                    "intensity": drawn.intensity[index], "nuisance": drawn.nuisance[index],
                    "index": index}


def make_builder(data_dir: str | None = None, image_size: int = DEFAULT_IMAGE_SIZE,
                 **config_options) -> SyntheticFaces:
  """The builder of `make_config(image_size, **config_options)`, reading and writing under
  `data_dir` (TFDS's default if None)."""
  config = make_config(image_size, **config_options)
  registered = {built.name for built in SyntheticFaces.BUILDER_CONFIGS}
  # TFDS refuses a config object named like a registered one: pass those by name.
  return SyntheticFaces(config=config.name if config.name in registered else config,
                        data_dir=data_dir)


def build(data_dir: str | None = None, image_sizes=IMAGE_SIZES, *, overwrite: bool = False,
          **config_options) -> list[SyntheticFaces]:
  """Builds the synthetic faces at `image_sizes` into `data_dir` (TFDS's default if None).

  An already built config is kept unless `overwrite`. `config_options` are `make_config`'s
  seed, subjects and images_per_subject.
  """
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builders = []
  for size in image_sizes:
    builder = make_builder(data_dir, size, **config_options)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=mode))
    builders.append(builder)
  return builders

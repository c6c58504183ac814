"""The EmotionSet TFDS builder: FER2013, CK+, JAFFE and MMI merged into 7 expression classes.

The user places any subset of the datasets under the manual directory (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`); `download_and_prepare` reads and checks all of them first, prints
the examples per class and source, and only then writes TFRecords. Bad input (a malformed CSV
row, an unreadable image, a label file without its image, a face not found) fails the build
with a list of where and why, unless the builder is made with `skip_bad_records=True`, which
leaves those records out and lists them in `info.metadata["skipped_records"]`. TFDS writes into
a temporary folder that becomes the dataset only when everything succeeded, so a failed or
interrupted build leaves nothing that loads.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil

import tensorflow_datasets as tfds
from etils import epath
from absl import logging

from flaxflow.data import features
from flaxflow.data import tf_cpu  # noqa: F401  (its import hides GPUs before TFDS uses TF)
from flaxflow.data.emotion_set import assemble
from flaxflow.data.sources import records

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place any subset of these datasets under the manual directory, each in its own folder and in
the layout it is distributed in:

  fer2013/fer2013.csv                              FER2013 (Kaggle), columns emotion,pixels,Usage
  ckplus/cohn-kanade-images/S005/001/*.png         CK+ images
  ckplus/Emotion/S005/001/*_emotion.txt            CK+ emotion labels
  jaffe/KA.AN1.39.tiff ...                         JAFFE (sub-folders allowed)
  mmi/Sessions/1/S001-001.avi + S001-001.xml       MMI as distributed (or the layout below)
  <name>/<label>/<subject>_*.png                   any other dataset (and MMI frames), e.g.
                                                   kdef/happy/AF01_HAS.png

<label> is one of anger, disgust, fear, happy, neutral, sad, surprise (or angry, happiness,
sadness, surprised, ...). The part of a file name before the first underscore names the person.
"""

HOW_TO_SKIP = ("Fix them, or build with skip_bad_records=True (python -m "
               "flaxflow.data.emotion_set ... --skip_bad_records) to leave them out and list them "
               "in the dataset's metadata.")


@dataclasses.dataclass(eq=False)
class EmotionSetConfig(tfds.core.BuilderConfig):
  """An EmotionSet resolution: square grayscale faces of `image_size` pixels."""

  image_size: int = 64


class EmotionSet(tfds.core.GeneratorBasedBuilder):
  """FER2013, CK+, JAFFE and MMI faces with 7 expression labels, split without shared subjects."""

  # TFDS derives both paths from the module's name, which names the installed package
  # (flaxflow.data...), not the repository folder (data/...) this file is in.
  pkg_dir_path = epath.Path(__file__).parent
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "FER2013, CK+, JAFFE, MMI and folder-layout sources."}
  BUILDER_CONFIGS = [
      EmotionSetConfig(name="48", image_size=48, description="48x48 grayscale faces."),
      EmotionSetConfig(name="64", image_size=64, description="64x64 grayscale faces."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "64"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def __init__(self, *, skip_bad_records: bool = False, **kwargs):
    if not isinstance(skip_bad_records, bool):
      raise TypeError(f"skip_bad_records must be True or False, not {skip_bad_records!r}")
    self._skip_bad_records = skip_bad_records
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    side = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **features.face_features(side),
            "source": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    side = self.builder_config.image_size
    assembly = assemble.assemble(dl_manager.manual_dir, side)
    counts = assemble.count(assembly.examples)
    print(assemble.count_table(counts, records.CLASS_NAMES,
                               title=f"EmotionSet {side}x{side}: examples per class and source "
                               f"(cells: {','.join(assemble.SPLITS)})"))
    problems = assembly.problems
    if problems and not self._skip_bad_records:
      raise assemble.BadInputError(
          f"{len(problems)} bad input record(s) under {dl_manager.manual_dir}:\n"
          f"{assemble.describe_problems(problems)}\n{HOW_TO_SKIP}", problems)
    if problems:
      print(f"Skipped {len(problems)} bad input record(s), listed in the dataset's metadata "
            f"under skipped_records:\n{assemble.describe_problems(problems)}")
    if not assembly.examples:
      raise assemble.BadInputError(
          f"no usable example under {dl_manager.manual_dir}", problems)
    self.info.metadata["counts"] = counts
    self.info.metadata["skipped_records"] = [str(problem) for problem in problems]
    return {split: self._generate_examples([e for e in assembly.examples if e.split == split])
            for split in assemble.SPLITS
            if any(e.split == split for e in assembly.examples)}

  def _generate_examples(self, examples: list[assemble.Example]):
    for example in examples:
      yield example.key, {"image": example.image, "label": example.label,
                          "subject": example.subject, "source": example.source}


def remove_stale_incomplete_builds(version_dir: str) -> list[str]:
  """Removes the `incomplete.<suffix>_<version>` folders that TFDS left next to `version_dir` when
  a build of it was killed (TFDS removes its own only on a clean exit); returns their paths.
  Two builds of one config into one data_dir at once are not supported."""
  parent, version = os.path.split(os.path.normpath(version_dir))
  pattern = os.path.join(glob.escape(parent), f"incomplete.*_{glob.escape(version)}")
  stale = sorted(glob.glob(pattern))
  for path in stale:
    logging.warning("removing %s, left by a build that was killed", path)
    shutil.rmtree(path)
  return stale


def build(manual_dir: str, data_dir: str | None = None, configs=("48", "64"), *,
          skip_bad_records: bool = False, overwrite: bool = False) -> list[EmotionSet]:
  """Builds the EmotionSet `configs` from `manual_dir` into `data_dir` (TFDS's default if None).

  An already built config is kept unless `overwrite`.
  """
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"manual_dir {manual_dir} is not a directory")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builders = []
  for config in configs:
    builder = EmotionSet(config=config, data_dir=data_dir, skip_bad_records=skip_bad_records)
    remove_stale_incomplete_builds(builder.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=mode))
    builders.append(builder)
  return builders

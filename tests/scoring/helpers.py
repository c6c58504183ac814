"""A build small enough to fit readers on in seconds, and its readers."""

import functools

from flaxflow import scoring

SMALL_BUILD = scoring.FaceBuild(image_size=32, seed=0,
                                subjects={"train": 24, "validation": 2, "test": 6},
                                images_per_subject=16)


@functools.lru_cache(maxsize=None)
def small_readers() -> scoring.Readers:
  """Readers of SMALL_BUILD from 3 renders of each class of each of its 24 training people."""
  return scoring.fit_readers(SMALL_BUILD, per_class=3)

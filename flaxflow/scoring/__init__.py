"""How any generator of synthetic faces is judged: against ground truth, by readers of its own.

Every image scoring needs is rendered from the factors of a build's people, so every method is
judged on the same people and images whichever build (peak frames or every intensity) it
trained on.

The build and its people (`people`):

    from flaxflow import scoring
    build = scoring.FaceBuild(image_size=32, seed=0,
                              subjects={"train": 120, "validation": 20, "test": 20},
                              images_per_subject=64)   # or FaceBuild.from_options(builder_config)

The independent readers (`readers`), fitted once per build on fresh renders of the training
people only (about a minute on 2 CPU cores), never used in any model's training, and kept in a
file under `cache_dir` that every later call reads (`load_readers`; the entry points use
`<data_dir>/synthetic_faces_scoring/`):

    readers = scoring.load_readers(build, cache_dir)
    classes = readers.read_expressions(images)           # uint8 (N, H, W, 1) -> (N,) classes
    references = scoring.reference_images(build, "test")  # every class of each test person
    found = readers.nearest_people(images, references)    # (N,) person index among the K people
    kept = found == person_of_each_image                  # chance 1/K
    readers.report  # accuracies on the test people's dataset images (all intensities, peak
                    # frames), on renders at the stated intensity, and the identity measure on
                    # the average person's face (at chance)

`person_of_each_image` indexes the split's people in order (0..K-1), as `draw_images` and
`FaceBuild.dataset_factors` (subject-major) number them. `average_identity_renders(labels,
intensities, size)` draws the average person (an ideal IF-GAN's output) with given expressions.
"""

from flaxflow.scoring.people import (ALL_INTENSITIES, PEAK_INTENSITIES, STATED_INTENSITY, Drawn,
                                     FaceBuild, average_identity_renders, draw_images)
from flaxflow.scoring.readers import (Readers, features, fit_readers, load_readers,
                                      reference_images)

__all__ = [
    "ALL_INTENSITIES", "PEAK_INTENSITIES", "STATED_INTENSITY", "Drawn", "FaceBuild", "Readers",
    "average_identity_renders", "draw_images", "features", "fit_readers", "load_readers",
    "reference_images",
]

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

The protocol (`protocol`): a method is a transfer callable, uint8 images (B, H, W, 1) and their
classes (B,) -> uint8 (B, 7, H, W, 1), every input moved to every class; the same code scores
any method and the two references, doing nothing (`untouched`) and the ground truth:

    sets = scoring.scoring_sets(build, "test")   # {"peak": ..., "all_intensities": ...}
    method = scoring.Method(transfer, n_bits=8, own_reader=None)  # own_reader: images -> classes
    figures = scoring.score_columns(method, sets, readers)  # {"peak": {...}, "all_intensities"}
    print(scoring.format_scores({"one_hot": figures}))
    scoring.score(scoring.ground_truth(sets["peak"]), sets["peak"], readers)  # the ceiling

Each column's figures, over the transfers whose target differs from the source:
target_accuracy (and _per_class), identity_kept, l1, ssim, l1_noise_free, l1_changed_pixels,
l1_unchanged_pixels, gap_closed, checkerboard_ratio, ceiling_target_accuracy (_per_class),
ceiling_identity_kept, ceiling_l1_noise_free (the noise alone), untouched_* (the same for the
untouched input), intensity (the ground truth's), source_intensities, n_bits, num_sources,
num_transfers, changed_pixel_share, people,
and own_classifier_target_accuracy with its ceiling for a method with its own classifier. The
pixel measures alone are in `metrics` (l1_errors, ssim_scores, changed_pixels, masked_l1,
gap_closed, checkerboard_ratio, at_bit_depth).
"""

from flaxflow.scoring import metrics
from flaxflow.scoring.people import (ALL_INTENSITIES, PEAK_INTENSITIES, STATED_INTENSITY, Drawn,
                                     FaceBuild, average_identity_renders, draw_images)
from flaxflow.scoring.protocol import (COLUMNS, Method, ScoringSet, format_scores, ground_truth,
                                       score, score_columns, scoring_sets, untouched)
from flaxflow.scoring.readers import (Readers, features, fit_readers, load_readers,
                                      reference_images)

__all__ = [
    "ALL_INTENSITIES", "COLUMNS", "PEAK_INTENSITIES", "STATED_INTENSITY", "Drawn", "FaceBuild",
    "Method", "Readers", "ScoringSet", "average_identity_renders", "draw_images", "features",
    "fit_readers", "format_scores", "ground_truth", "load_readers", "metrics", "reference_images",
    "score", "score_columns", "scoring_sets", "untouched",
]

"""The scoring protocol: every method moves the same images of the test people to every
expression, and the results are judged against the ground truth by the independent readers.

The scoring set (`scoring_sets`) is rendered from the test people's factors, never read from a
model's dataset, so methods trained on different builds (peak frames only, every intensity) are
judged on the same faces. Each test person shows each class `per_class` times, in poses, light
and noise drawn afresh; the headline column ("peak") draws intensities of peak frames, (0.7, 1],
and the second ("all_intensities") the same images at intensities in (0, 1]. The ground truth of
a transfer to class c is the same person, pose, light and noise rendered with c at a stated
intensity (`people.STATED_INTENSITY`, neutral 0), and again without sensor noise.

A method is a `Method`: a transfer callable, uint8 images (B, H, W, 1) and their classes (B,) ->
uint8 (B, classes, H, W, 1), every input moved to every class, with the bit depth it models and
optionally its own classifier. The two references are methods too: `untouched` (doing nothing)
and `ground_truth` (the ceiling). `score` gives, over the transfers whose target differs from
the source: the readers' target accuracy and identity kept with their ceilings (the same readers
on the ground truth), L1 and SSIM to the ground truth, L1 to the noise-free ground truth, L1 on
the pixels the ground truth changes and on the rest, `gap_closed`, the checkerboard ratio and the
untouched input's figures beside them.
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from flaxflow.data.synthetic_faces import factors
from flaxflow.scoring import metrics, people
from flaxflow.scoring.readers import Readers, reference_images

Transfer = Callable[[np.ndarray, np.ndarray], np.ndarray]
Reader = Callable[[np.ndarray], np.ndarray]
COLUMNS = {"peak": people.PEAK_INTENSITIES, "all_intensities": people.ALL_INTENSITIES}
SOURCES_PER_CLASS = 1  # per test person: 140 sources and 840 transfers for 20 people
SOURCES_PER_CALL = 28  # inputs a transfer is given at once


@dataclasses.dataclass(frozen=True)
class Method:
  """A transfer and what scoring needs to know of it: the bit depth it sees and draws images at
  (its inputs and ground truth are taken there first, so that a perfect transfer scores 0), its
  own classifier (images -> classes), read beside the independent one, and what it does in a
  few words (for titles)."""

  transfer: Transfer
  n_bits: int = 8
  own_reader: Optional[Reader] = None
  description: str = ""


@dataclasses.dataclass(frozen=True)
class ScoringSet:
  """The inputs of one column, their ground truths and the people's reference images."""

  sources: people.Drawn
  truths: np.ndarray  # uint8 (B, classes, H, W, 1): source b redrawn with class c
  noise_free_truths: np.ndarray  # the same without sensor noise
  references: people.Drawn  # what the identity measure compares with (`reference_images`)
  source_intensities: Tuple[float, float]
  target_intensity: float


def scoring_sets(build: people.FaceBuild, split: str = "test",
                 per_class: int = SOURCES_PER_CLASS,
                 target_intensity: float = people.STATED_INTENSITY) -> Dict[str, ScoringSet]:
  """{column: ScoringSet} of COLUMNS for the people of `split` of `build`."""
  references = reference_images(build, split)
  sets = {}
  for column, intensities in COLUMNS.items():
    sources = people.draw_images(build, split, factors.SCORING_STREAM, per_class, intensities)
    redrawn = people.with_expressions(sources.factors, range(people.NUM_CLASSES),
                                      target_intensity)
    shape = (len(sources.images), people.NUM_CLASSES, *sources.images.shape[1:])
    sets[column] = ScoringSet(
        sources=sources,
        truths=people.render_factors(redrawn, build.image_size).reshape(shape),
        noise_free_truths=people.render_factors(people.without_noise(redrawn),
                                                build.image_size).reshape(shape),
        references=references, source_intensities=intensities,
        target_intensity=target_intensity)
  return sets


def untouched(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The transfer that does nothing: every input as it is, for every class."""
  del labels
  return np.repeat(np.asarray(images)[:, None], people.NUM_CLASSES, axis=1)


def ground_truth(scoring_set: ScoringSet, n_bits: int = 8) -> Method:
  """The ceiling as a method: every source's ground truth for every class, at `n_bits`."""
  def transfer(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # Each input is found among the sources by its pixels, whatever part of them it is given.
    del labels
    rows = {image.tobytes(): index for index, image in enumerate(
        metrics.at_bit_depth(scoring_set.sources.images, n_bits))}
    return metrics.at_bit_depth(scoring_set.truths[[rows[image.tobytes()] for image in images]],
                                n_bits)
  return Method(transfer, n_bits=n_bits)


def transfer_all(method: Method, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """`method.transfer` of every image, SOURCES_PER_CALL at a time, checked: uint8 (B, classes,
  H, W, C)."""
  parts = []
  for start in range(0, len(images), SOURCES_PER_CALL):
    part = slice(start, start + SOURCES_PER_CALL)
    moved = np.asarray(method.transfer(images[part], labels[part]))
    expected = (len(images[part]), people.NUM_CLASSES, *images.shape[1:])
    if moved.shape != expected or moved.dtype != np.uint8:
      raise ValueError(f"the transfer gave {moved.dtype} {moved.shape} for {expected[0]} inputs: "
                       f"expected uint8 {expected}, every input moved to every class")
    parts.append(moved)
  return np.concatenate(parts)


def _accuracy_per_class(read: np.ndarray, targets: np.ndarray) -> Dict[str, float]:
  return {name: float(np.mean(read[targets == label] == label))
          for label, name in enumerate(factors.CLASS_NAMES) if np.any(targets == label)}


def score(method: Method, scoring_set: ScoringSet, readers: Readers) -> Dict:
  """The figures of `method` on `scoring_set` over the transfers whose target class differs
  from the source's (see the module's docstring; "own_classifier_*" only for a method with its
  own classifier)."""
  n_bits = method.n_bits
  sources = scoring_set.sources
  inputs = metrics.at_bit_depth(sources.images, n_bits)
  labels = sources.factors.expression
  transferred = transfer_all(method, inputs, labels)
  batch, num_classes = transferred.shape[:2]
  targets = np.tile(np.arange(num_classes), batch)
  moved = np.repeat(labels, num_classes) != targets
  pairs = lambda images: images.reshape(batch * num_classes, *images.shape[2:])[moved]
  generated = pairs(transferred)
  truths = pairs(metrics.at_bit_depth(scoring_set.truths, n_bits))
  noise_free = pairs(metrics.at_bit_depth(scoring_set.noise_free_truths, n_bits))
  untouched_images = pairs(untouched(inputs, labels))
  changed = metrics.changed_pixels(pairs(scoring_set.truths), pairs(untouched(sources.images,
                                                                              labels)))
  targets, person = targets[moved], np.repeat(sources.person, num_classes)[moved]

  def reader_figures(images: np.ndarray) -> Dict[str, float]:
    read = readers.read_expressions(images)
    found = readers.nearest_people(images, scoring_set.references)
    return {"target_accuracy": float(np.mean(read == targets)),
            "target_accuracy_per_class": _accuracy_per_class(read, targets),
            "identity_kept": float(np.mean(found == person))}

  def pixel_figures(images: np.ndarray) -> Dict[str, float]:
    return {"l1": float(metrics.l1_errors(images, truths).mean()),
            "ssim": float(metrics.ssim_scores(images, truths).mean()),
            "l1_noise_free": float(metrics.l1_errors(images, noise_free).mean()),
            "l1_changed_pixels": metrics.masked_l1(images, truths, changed),
            "l1_unchanged_pixels": metrics.masked_l1(images, truths, ~changed)}

  figures = {**reader_figures(generated), **pixel_figures(generated)}
  reference = {**reader_figures(untouched_images), **pixel_figures(untouched_images)}
  ceiling = reader_figures(truths)
  figures["gap_closed"] = metrics.gap_closed(figures["l1_changed_pixels"],
                                             reference["l1_changed_pixels"])
  figures["checkerboard_ratio"] = metrics.checkerboard_ratio(generated, truths)
  reference["checkerboard_ratio"] = metrics.checkerboard_ratio(untouched_images, truths)
  ceiling["l1_noise_free"] = float(metrics.l1_errors(truths, noise_free).mean())
  figures.update({f"ceiling_{name}": value for name, value in ceiling.items()})
  figures.update({f"untouched_{name}": value for name, value in reference.items()
                  if name != "target_accuracy_per_class"})
  if method.own_reader is not None:
    own = np.asarray(method.own_reader(generated))
    figures["own_classifier_target_accuracy"] = float(np.mean(own == targets))
    figures["own_classifier_ceiling_target_accuracy"] = float(np.mean(
        np.asarray(method.own_reader(truths)) == targets))
  return {**figures, "intensity": scoring_set.target_intensity,
          "source_intensities": list(scoring_set.source_intensities), "n_bits": n_bits,
          "num_sources": int(batch), "num_transfers": int(moved.sum()),
          "changed_pixel_share": float(changed.mean()), "people": int(sources.person.max() + 1)}


def score_columns(method: Method, sets: Dict[str, ScoringSet], readers: Readers) -> Dict:
  """{column: `score`} of `method` on every scoring set of `scoring_sets`."""
  return {column: score(method, scoring_set, readers) for column, scoring_set in sets.items()}


_TABLE = (("column", 17), ("target (ceiling)", 18), ("identity kept (ceiling)", 25),
          ("L1 (untouched)", 18), ("L1 changed/unchanged", 22), ("gap closed", 12),
          ("checkerboard", 14))


def format_scores(scores: Dict[str, Dict[str, Dict]]) -> str:
  """{condition set: {column: `score`}} as a table, one line per condition set and column, each
  reader's figure with its ceiling and L1 with the untouched input's in brackets."""
  percent = lambda value: f"{100 * value:.1f}%"
  table = (("condition set", max(map(len, scores), default=0) + 2), *_TABLE)
  line = lambda cells: "".join(cell.ljust(width) if index < 2 else cell.rjust(width)
                               for index, (cell, (_, width)) in enumerate(zip(cells, table)))
  lines = [line([title for title, _ in table])]
  for name, columns in scores.items():
    for column, figures in columns.items():
      lines.append(line((
          name, column,
          f"{percent(figures['target_accuracy'])} ({percent(figures['ceiling_target_accuracy'])})",
          f"{percent(figures['identity_kept'])} ({percent(figures['ceiling_identity_kept'])})",
          f"{figures['l1']:.4f} ({figures['untouched_l1']:.4f})",
          f"{figures['l1_changed_pixels']:.4f}/{figures['l1_unchanged_pixels']:.4f}",
          f"{figures['gap_closed']:.3f}", f"{figures['checkerboard_ratio']:.2f}")))
  return "\n".join(lines)

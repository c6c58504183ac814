"""Pixel measures of generated faces against their ground truth (uint8 images, pixels read in
[0, 1]).

Plain L1 rewards doing nothing: only about 5% of a face's pixels change between two
expressions of one person, so an untouched input is close to its ground truth everywhere else.
The measures here split the face into the pixels the ground truth changes (by more than
`CHANGED_LEVEL` grey levels) and the rest, and `gap_closed` says how much of the untouched
input's error on the changed pixels a method removes: 0 for doing nothing, 1 for the truth.
"""

import numpy as np
import skimage.metrics

# A pixel counts as changed by the expression when the ground truth differs from the input by
# more than this many grey levels of 255.
CHANGED_LEVEL = 8


def _checked_pairs(images: np.ndarray, references: np.ndarray):
  images, references = np.asarray(images), np.asarray(references)
  if images.shape != references.shape or images.ndim != 4:
    raise ValueError(f"images {images.shape} and references {references.shape}: expected equal "
                     "shapes (N, H, W, C)")
  return images, references


def _absolute_differences(images: np.ndarray, references: np.ndarray) -> np.ndarray:
  images, references = _checked_pairs(images, references)
  return np.abs(images.astype(np.float32) - references.astype(np.float32)) / 255


def l1_errors(images: np.ndarray, references: np.ndarray) -> np.ndarray:
  """(N,) the mean absolute difference of uint8 `images` and `references`, in [0, 1]."""
  differences = _absolute_differences(images, references)
  return differences.reshape(len(differences), -1).mean(axis=1)


def ssim_scores(images: np.ndarray, references: np.ndarray) -> np.ndarray:
  """(N,) scikit-image's SSIM of uint8 grayscale `images` (N, H, W, 1) against `references`."""
  images, references = _checked_pairs(images, references)
  return np.array([skimage.metrics.structural_similarity(image[..., 0], reference[..., 0],
                                                         data_range=255)
                   for image, reference in zip(images, references)])


def changed_pixels(truths: np.ndarray, inputs: np.ndarray) -> np.ndarray:
  """bool, the shape of the images: where the ground truth differs from the input by more than
  CHANGED_LEVEL grey levels."""
  return _absolute_differences(truths, inputs) * 255 > CHANGED_LEVEL


def masked_l1(images: np.ndarray, references: np.ndarray, mask: np.ndarray) -> float:
  """The mean absolute difference over the pixels of `mask`, pooled over all images (NaN for an
  empty mask)."""
  differences = _absolute_differences(images, references)
  if mask.shape != differences.shape:
    raise ValueError(f"mask {mask.shape}: expected the images' shape {differences.shape}")
  return float(differences[mask].mean()) if mask.any() else float("nan")


def gap_closed(l1_changed: float, untouched_l1_changed: float) -> float:
  """1 - l1_changed / untouched_l1_changed: the share of the untouched input's error on the
  changed pixels that a method removes (negative when it adds error there)."""
  if not untouched_l1_changed > 0:
    raise ValueError(f"untouched_l1_changed={untouched_l1_changed}: expected a positive error "
                     "(the ground truth changes no pixel)")
  return 1.0 - l1_changed / untouched_l1_changed


def period_two_power(images: np.ndarray) -> np.ndarray:
  """(N,) the power of uint8 images (N, H, W, C), H and W even, at the period of 2 pixels along
  rows or columns (any period along the other axis): the Nyquist row and column of the 2-D
  spectrum, where a checkerboard or 2-pixel stripes put their energy and faces very little.
  The images are seen through a Hann window first, so that the jump from one edge to the other
  (the spectrum takes the image as periodic) adds none."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1] % 2 or images.shape[2] % 2:
    raise ValueError(f"images of shape {images.shape}: expected (N, H, W, C) with H and W even")
  height, width = images.shape[1:3]
  window = np.outer(np.hanning(height), np.hanning(width))[None, :, :, None]
  power = np.abs(np.fft.fft2(images / 255 * window, axes=(1, 2))) ** 2
  rows, columns = height // 2, width // 2
  nyquist = power[:, rows].sum(axis=(1, 2)) + power[:, :, columns].sum(axis=(1, 2))
  nyquist -= power[:, rows, columns].sum(axis=-1)  # counted in both
  return nyquist / (height * width)


def checkerboard_ratio(generated: np.ndarray, real: np.ndarray) -> float:
  """The mean `period_two_power` of `generated` over that of `real` images: 1 for images with
  the real ones' fine texture (their sensor noise), below 1 for smoother ones, far above for a
  checkerboard."""
  real_power = period_two_power(real).mean()
  if not real_power > 0:
    raise ValueError("real images without any power at the 2-pixel period: nothing to compare to")
  return float(period_two_power(generated).mean() / real_power)


def at_bit_depth(images: np.ndarray, n_bits: int) -> np.ndarray:
  """uint8 `images` as a model of `n_bits` sees and draws them: each pixel at the bottom of its
  bin of 2**(8 - n_bits) grey levels (`objectives.postprocess` of `dequantize`)."""
  if not 1 <= n_bits <= 8:
    raise ValueError(f"n_bits={n_bits}: expected 1..8")
  shift = 8 - n_bits
  return ((np.asarray(images, np.uint8) >> shift) << shift).astype(np.uint8)

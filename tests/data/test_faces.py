"""Face detection and cropping on real photos: one face in `astronaut()`, none elsewhere."""

import cv2
import numpy as np
import pytest
import skimage.data

from flaxflow.data import faces


def gray(image):
  return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def test_finds_the_astronauts_face():
  x, y, width, height = faces.find_face(gray(skimage.data.astronaut()))
  assert abs(x - 177) <= 8 and abs(y - 66) <= 8 and abs(width - 95) <= 10 and width == height


@pytest.mark.parametrize("photo", ["camera", "coffee", "chelsea"])
def test_no_face_in_photos_without_one(photo):
  image = gray(getattr(skimage.data, photo)())
  assert faces.find_face(image) is None
  assert faces.crop_face(image, 48) is None


def test_the_largest_face_is_cropped_and_resized():
  astronaut = gray(skimage.data.astronaut())
  small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
  canvas = np.full((512, 768), 128, np.uint8)
  canvas[:, 256:] = astronaut  # face about 95 pixels wide
  canvas[:256, :256] = small  # face about 48 pixels wide
  x, _, width, _ = faces.find_face(canvas)
  assert x > 256 and width > 80
  crop = faces.crop_face(canvas, 64)
  assert crop.shape == (64, 64) and crop.dtype == np.uint8
  x, y, width, height = faces.find_face(astronaut)
  expected = cv2.resize(astronaut[y:y + height, x:x + width], (64, 64),
                        interpolation=cv2.INTER_AREA)
  assert np.abs(crop.astype(int) - expected).mean() < 10


def test_resize_keeps_dtype_and_passes_matching_sizes_through():
  image = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
  assert faces.resize(image, 48) is image
  bigger = faces.resize(image, 64)
  assert bigger.shape == (64, 64) and bigger.dtype == np.uint8
  smaller = faces.resize(np.full((100, 80), 9, np.uint8), 16)
  assert smaller.shape == (16, 16) and (smaller == 9).all()

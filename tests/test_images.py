"""Tests of flaxflow.images: labelled sample grids as PNG."""

import numpy as np
import pytest
from PIL import Image

from flaxflow import images


def test_grid_places_every_image_and_labels_every_row(tmp_path):
  grid = np.zeros((2, 3, 8, 8, 1), np.uint8)
  grid[1, 2] = 255  # The last image of the second row is white, the rest black.
  path = images.save_image_grid(str(tmp_path / "sub" / "grid.png"), grid, ["zero", "one"])
  picture = np.asarray(Image.open(path).convert("RGB"))
  unlabelled = np.asarray(images.image_grid(grid))
  label_width = picture.shape[1] - unlabelled.shape[1]
  assert label_width > 0 and picture.shape[0] == unlabelled.shape[0]
  cell = (unlabelled.shape[0] - 2) // 2 - 2  # rows * (cell + padding) + padding
  assert cell >= 32, "8x8 images are enlarged to be visible"
  assert (picture[:, :label_width] < 128).any(), "the label column holds dark text"

  def cell_pixels(row, column):
    top, left = 2 + row * (cell + 2), 2 + column * (cell + 2)
    return unlabelled[top:top + cell, left:left + cell]

  assert (cell_pixels(1, 2) == 255).all()
  assert all((cell_pixels(row, column) == 0).all() for row in range(2) for column in range(3)
             if (row, column) != (1, 2))
  np.testing.assert_array_equal(np.asarray(images.image_grid(grid[:, :, :, :, [0, 0, 0]])),
                                unlabelled)


@pytest.mark.parametrize("shape, dtype, labels, message", [
    ((3, 8, 8, 1), np.uint8, [], "expected \\(rows, columns"),
    ((1, 2, 8, 8, 2), np.uint8, [], "1 or 3 channels"),
    ((1, 2, 8, 8, 1), np.float32, [], "uint8"),
    ((2, 2, 8, 8, 1), np.uint8, ["only one"], "1 row_labels for 2 rows"),
])
def test_bad_input_is_named(shape, dtype, labels, message):
  with pytest.raises(ValueError, match=message):
    images.image_grid(np.zeros(shape, dtype), labels)

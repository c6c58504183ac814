"""flaxflow.gan.pixels: the GANs' one pixel convention."""

import numpy as np

from flaxflow import objectives
from flaxflow.gan import pixels

EVERY_LEVEL = np.arange(256, dtype=np.uint8)


def test_uint8_levels_span_minus_one_to_one_and_come_back():
  unit = np.asarray(pixels.from_uint8(EVERY_LEVEL))
  assert unit[0] == -1.0 and unit[-1] == 1.0 and np.all(np.diff(unit) > 0)
  np.testing.assert_array_equal(np.asarray(pixels.to_uint8(unit)), EVERY_LEVEL)
  np.testing.assert_array_equal(np.asarray(pixels.to_uint8(np.array([-3.0, 3.0]))), [0, 255])


def test_the_flows_images_come_to_the_same_values():
  flow = objectives.dequantize(None, EVERY_LEVEL, 8)
  np.testing.assert_allclose(pixels.from_flow_range(flow), pixels.from_uint8(EVERY_LEVEL),
                             atol=1e-6)

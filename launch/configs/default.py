"""The default: a small class-conditional BPLF on synthetic faces, minutes on a 2-core CPU.

`--config=launch/configs/default.py:48` trains on the 48x48 build instead of 32x32.
"""

import ml_collections

from flaxflow.launch.configs import common

_SIZES = ("32", "48")


def get_config(image_size: str = "32") -> ml_collections.ConfigDict:
  if image_size not in _SIZES:
    raise ValueError(f"default.py:{image_size}: expected one of {', '.join(_SIZES)}")
  side = int(image_size)
  config = common.cpu_config()
  config.dataset = f"synthetic_faces/{side}"
  # Peak frames, as the papers take from CK+ and MMI: expressions at intensities in (0.7, 1].
  config.dataset_options.min_intensity = 0.7
  config.n_bits = 5
  config.batch_size = 64
  config.eval_batch_size = 320
  # 1600 steps fit in 10 minutes on 2 CPU cores with compilation and the final evaluation; the
  # per-class samples show the expressions from about 1500 on (launch/RESULTS.md).
  config.num_steps = 1600
  config.checkpoint_every = 400
  config.sample_every = 800
  config.samples_per_class = 8
  config.sample_temperature = 0.5
  config.model = ml_collections.ConfigDict(dict(
      name="bplf", image_shape=(side, side, 1), num_classes=7, levels=3, steps_per_level=4,
      width=32, scan_unroll=4))
  return config

"""TensorFlow for input pipelines only: import `tf` from here so it never claims a GPU.

JAX owns the accelerators; a TensorFlow that saw them would reserve most of their memory at
its first op. Hiding them works only before TensorFlow initialises its devices, so every
module of `data/` imports TensorFlow through this one.
"""

import tensorflow as tf


def hide_accelerators_from_tensorflow() -> None:
  """Makes TensorFlow CPU-only; fails if it already initialised with a GPU visible."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError as error:  # devices were initialised before this module was imported
    if tf.config.get_visible_devices("GPU"):
      raise RuntimeError("TensorFlow initialised its GPUs before data.tf_cpu was imported; "
                         "import flaxflow.data.* before running any TensorFlow op") from error


hide_accelerators_from_tensorflow()

__all__ = ["tf", "hide_accelerators_from_tensorflow"]

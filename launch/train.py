"""Trains a model of any family (flows, the CNN baseline, DECGAN, IF-GAN):
`python -m launch.train --config=launch/configs/<name>.py --workdir=DIR`.

Without --config it trains the small class-conditional BPLF of launch/configs/default.py on 32x32
synthetic faces (digits: --config=launch/configs/digits_bplf.py; IF-GAN:
--config=launch/configs/ifgan_faces.py). Any config field can be
overridden, e.g. `--config.num_steps=200`. Rerunning the same command resumes from the latest
checkpoint in --workdir. Exit codes: `launch.runs`.
"""

import os

from absl import app, logging

from flaxflow.data import pipeline
from flaxflow.workdir import Workdir, flatten
from flaxflow.launch import faces, runs

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                               "default.py")

_CONFIG = runs.define_config_flag(_DEFAULT_CONFIG, "Training config file.")
_WORKDIR = runs.define_workdir_flag("Checkpoints, TensorBoard logs and samples go here.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = runs.config_from_flag(_CONFIG)
  runs.check_training_config(config)
  runs.start_devices()
  train_set, info = runs.load_split(config, "train")
  eval_set, _ = runs.load_split(config, config.eval_split)
  # On synthetic faces a family may score itself against ground truth while it trains (IF-GAN,
  # DECGAN): the build's independent readers are fitted on first use (about a minute, then
  # cached).
  synthetic_faces = ((lambda: (faces.scoring_build(config), faces.scoring_readers(config)))
                     if faces.is_synthetic_faces(config.dataset) else None)
  result = runs.train_into_workdir(
      config, Workdir(_WORKDIR.value), train_set, image_shape=info.image_shape,
      class_names=info.class_names,
      eval_batches=lambda: pipeline.eval_batches(eval_set, batch_size=config.eval_batch_size),
      synthetic_faces=synthetic_faces)
  if result.eval_metrics:
    logging.info("final %s %s: %s", config.dataset, config.eval_split, " ".join(
        f"{name}={value:.4f}" for name, value in sorted(flatten(result.eval_metrics).items())))


if __name__ == "__main__":
  runs.run_main(main)

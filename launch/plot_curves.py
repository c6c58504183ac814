"""Smoothed test NLL of the rows of an ablation workdir against epochs (the BPLF paper's Fig. 7):
`python -m launch.plot_curves --workdir W`.

Reads the TensorBoard logs each row W/<row>/ wrote while training: "eval/bits_per_dim" (the test
split, every `eval_every` steps; launch.ablate evaluates its rows on it) where a row logged it at
two steps or more, else "train/bits_per_dim" (the legend says which). Epochs are steps × batch /
training examples. Writes W/nll_curves.png (or --output).
"""

import json
import os
from typing import Dict, Tuple

import numpy as np
from absl import app, flags
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from flaxflow.analysis import ablation, curves
from flaxflow.workdir import Workdir
from flaxflow.launch import research, runs

_SMOOTHING = flags.DEFINE_float("smoothing", 0.6, "TensorBoard-style smoothing weight in [0, 1).")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write (default: WORKDIR/nll_curves.png).")
_TAGS = ("eval/bits_per_dim", "train/bits_per_dim")


def read_scalars(log_dir: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of every scalar in the TensorBoard event files under `log_dir`."""
  accumulator = event_accumulator.EventAccumulator(
      log_dir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  accumulator.Reload()
  scalars = {}
  for tag in accumulator.Tags()["tensors"]:
    events = accumulator.Tensors(tag)
    scalars[tag] = (np.array([event.step for event in events]),
                    np.array([float(tensor_util.make_ndarray(event.tensor_proto))
                              for event in events]))
  for tag in accumulator.Tags()["scalars"]:
    events = accumulator.Scalars(tag)
    scalars[tag] = (np.array([event.step for event in events]),
                    np.array([event.value for event in events]))
  return scalars


def row_curve(row_dir: str) -> Tuple[str, np.ndarray, np.ndarray]:
  """(tag, steps, values) of the row's test bits/dim, or its training bits/dim without them."""
  scalars = read_scalars(Workdir(row_dir).tensorboard)
  for tag in _TAGS:
    if tag in scalars and len(scalars[tag][0]) >= 2:
      steps, values = scalars[tag]
      order = np.argsort(steps, kind="stable")
      return tag, steps[order], values[order]
  raise ValueError(f"{row_dir}: no {' or '.join(_TAGS)} logged at two steps or more")


def row_label(row_dir: str) -> str:
  path = os.path.join(row_dir, ablation.ROW_FILE)
  if os.path.exists(path):
    with open(path) as file:
      return json.load(file)["label"]
  return os.path.basename(row_dir)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  workdir = os.path.abspath(research.WORKDIR.value)
  row_dirs = sorted(os.path.join(workdir, name) for name in os.listdir(workdir)
                    if os.path.isdir(Workdir(os.path.join(workdir, name)).tensorboard))
  if not row_dirs:
    raise FileNotFoundError(f"--workdir={workdir}: no row folders with TensorBoard logs")
  lines = {}
  for row_dir in row_dirs:
    config = Workdir(row_dir).read_config()
    _, info = research.split_batches(config, "train")
    tag, steps, values = row_curve(row_dir)
    epochs = curves.steps_to_epochs(steps, config.batch_size, info.num_examples["train"])
    split = "test" if tag.startswith("eval/") else "train"
    lines[f"{row_label(row_dir)} ({split})"] = (epochs, curves.smooth(values, _SMOOTHING.value))
    print(f"{row_label(row_dir)}: {tag} at {len(steps)} steps, last {values[-1]:.4f}")
  path = curves.save_curves(_OUTPUT.value or os.path.join(workdir, "nll_curves.png"), lines,
                            xlabel="epochs", ylabel="NLL (bits/dim)",
                            title=f"{workdir}: smoothing {_SMOOTHING.value:g}")
  print(f"wrote {path}")


if __name__ == "__main__":
  runs.run_main(main)

"""The layout of a run's workdir, in one place: what training writes and the research tools read.

    <workdir>/config.json          the full training config
    <workdir>/checkpoints/<step>/  Orbax checkpoints (`flaxflow.checkpointing`)
    <workdir>/tensorboard/         TensorBoard event files
    <workdir>/samples/step_*.png   sample grids written during training
    <workdir>/final_metrics.json   the last train and held-out metrics of a finished run
    <workdir>/analysis/            the research tools' outputs
"""

import json
import os
from typing import Any, Dict, Mapping

import ml_collections


class Workdir:
  """Paths of one run's workdir, and its config read and written."""

  def __init__(self, path: str):
    self.path = os.path.abspath(os.path.expanduser(path))

  @property
  def config_file(self) -> str:
    return os.path.join(self.path, "config.json")

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.path, "checkpoints")

  @property
  def tensorboard(self) -> str:
    return os.path.join(self.path, "tensorboard")

  @property
  def final_metrics_file(self) -> str:
    return os.path.join(self.path, "final_metrics.json")

  @property
  def analysis(self) -> str:
    return os.path.join(self.path, "analysis")

  def sample_grid_file(self, step: int) -> str:
    return os.path.join(self.path, "samples", f"step_{step:07d}.png")

  def read_config(self) -> ml_collections.ConfigDict:
    """The training config saved in the workdir."""
    if not os.path.isfile(self.config_file):
      raise FileNotFoundError(f"workdir {self.path}: no config.json; train into it first with "
                              f"python -m launch.train --workdir {self.path}")
    with open(self.config_file) as file:
      try:
        return ml_collections.ConfigDict(json.load(file))
      except json.JSONDecodeError as error:
        raise ValueError(f"{self.config_file}:{error.lineno}: not valid JSON "
                         f"({error.msg})") from None

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """Saves `config`; a workdir that holds a run of another config is an error, not overwritten."""
    config_json = config.to_json_best_effort(indent=2)
    if (os.path.exists(self.config_file)
        and self.read_config().to_dict() != json.loads(config_json)):
      raise ValueError(f"{self.path} holds a run of another config ({self.config_file}); pass a "
                       "new --workdir")
    os.makedirs(self.path, exist_ok=True)
    with open(self.config_file, "w") as file:
      file.write(config_json)

  def write_final_metrics(self, metrics: Mapping[str, Any]) -> None:
    """Writes `metrics` as strict JSON (a non-finite number is an error: JSON has none)."""
    text = json.dumps(metrics, indent=2, allow_nan=False)
    with open(self.final_metrics_file, "w") as file:
      file.write(text)

  def read_final_metrics(self) -> Dict[str, Any]:
    with open(self.final_metrics_file) as file:
      return json.load(file)

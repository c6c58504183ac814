"""The layout of a run's workdir, in one place: what training writes and the research tools read.

    <workdir>/config.json          the full training config
    <workdir>/checkpoints/<step>/  Orbax checkpoints (`flaxflow.checkpointing`)
    <workdir>/tensorboard/         TensorBoard event files
    <workdir>/samples/step_*.png   sample grids written during training
    <workdir>/train_metrics.json   the last log interval's train metrics, once the last step ran
    <workdir>/final_metrics.json   the last train and held-out metrics of a finished run
    <workdir>/analysis/            the research tools' outputs
    <workdir>/lock                 held (flock) by the process training into it; holds its id

The workdir's config is its contract: a rerun may change only `RESUMABLE_FIELDS` (how long, how
often, the learning rate), since every other field decides what the checkpoints hold and mean.
"""

import contextlib
import fcntl
import json
import os
import socket
from typing import Any, Dict, Iterator, List, Mapping, Optional

import ml_collections

# The fields a rerun into a workdir may change, e.g. to train longer or to resume a diverged run
# with a lower learning rate; the schedule's shape and clipping stay (they shape the optimizer).
RESUMABLE_FIELDS = frozenset((
    "data_dir", "num_steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every",
    "eval_every", "samples_per_class", "sample_temperature", "eval_batch_size",
    "max_consecutive_nonfinite", "optimizer.learning_rate", "optimizer.warmup_steps"))


class WorkdirInUseError(RuntimeError):
  """Another live process holds the workdir's lock."""


def write_json_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file renamed over it, so that a crash mid-write
  leaves the previous file (or none), never a truncated one."""
  partial = f"{path}.partial"
  with open(partial, "w") as file:
    file.write(text)
  os.replace(partial, path)


def read_json(path: str) -> Any:
  """The JSON of `path`; a file that is not valid JSON is a `ValueError` naming it and the line."""
  with open(path) as file:
    try:
      return json.load(file)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  """{"a.b": value} for every leaf of the nested mapping `tree`."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{prefix}{name}."))
    else:
      flat[f"{prefix}{name}"] = value
  return flat


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
  """One line per field outside `RESUMABLE_FIELDS` that differs: "field: saved -> new"."""
  saved, new = flatten(saved), flatten(new)
  missing = "(absent)"
  return [f"{field}: {saved.get(field, missing)!r} -> {new.get(field, missing)!r}"
          for field in sorted(set(saved) | set(new))
          if field not in RESUMABLE_FIELDS and saved.get(field, missing) != new.get(field, missing)]


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
  def lock_file(self) -> str:
    return os.path.join(self.path, "lock")

  @property
  def tensorboard(self) -> str:
    return os.path.join(self.path, "tensorboard")

  @property
  def train_metrics_file(self) -> str:
    return os.path.join(self.path, "train_metrics.json")

  @property
  def final_metrics_file(self) -> str:
    return os.path.join(self.path, "final_metrics.json")

  @property
  def analysis(self) -> str:
    return os.path.join(self.path, "analysis")

  def sample_grid_file(self, step: int) -> str:
    return os.path.join(self.path, "samples", f"step_{step:07d}.png")

  def check_is_folder(self) -> None:
    """A path naming a file cannot be a workdir: said before anything is read or created."""
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise NotADirectoryError(f"workdir {self.path} is a file, not a folder; pass another "
                               "--workdir")

  def read_config(self) -> ml_collections.ConfigDict:
    """The training config saved in the workdir."""
    self.check_is_folder()
    if not os.path.isfile(self.config_file):
      raise FileNotFoundError(f"workdir {self.path}: no config.json; train into it first with "
                              f"python -m flaxflow.launch.train --workdir {self.path}")
    return ml_collections.ConfigDict(read_json(self.config_file))

  def check_config_matches(self, config: ml_collections.ConfigDict) -> None:
    """Refuses a config that differs from the workdir's in a field outside `RESUMABLE_FIELDS`,
    with one line per differing field."""
    if not os.path.exists(self.config_file):
      return
    differences = config_differences(self.read_config().to_dict(),
                                     json.loads(config.to_json_best_effort()))
    if differences:
      raise ValueError(f"{self.path} holds a run of another config ({self.config_file}); pass "
                       "a new --workdir or these fields as they were (saved -> now):\n  "
                       + "\n  ".join(differences))

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """Saves `config` whole (a crash mid-write leaves the previous file)."""
    os.makedirs(self.path, exist_ok=True)
    write_json_atomically(self.config_file, config.to_json_best_effort(indent=2))

  @contextlib.contextmanager
  def lock(self) -> Iterator[None]:
    """Holds the workdir's lock file while the block runs; another live process holding it is a
    `WorkdirInUseError`. The lock is an flock, which the system releases when its process dies,
    so a killed run's stale lock file is simply taken over."""
    self.check_is_folder()
    os.makedirs(self.path, exist_ok=True)
    with open(self.lock_file, "a+") as file:
      try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        file.seek(0)
        raise WorkdirInUseError(f"{self.path} is in use by {file.read().strip() or 'a process'} "
                                f"({self.lock_file}); wait for it or pass another --workdir"
                                ) from None
      file.truncate(0)
      file.write(f"process {os.getpid()} on {socket.gethostname()}")
      file.flush()
      try:
        yield
      finally:
        fcntl.flock(file, fcntl.LOCK_UN)

  def write_final_metrics(self, metrics: Mapping[str, Any]) -> None:
    """Writes `metrics` atomically as strict JSON (a non-finite number is an error: JSON has
    none)."""
    write_json_atomically(self.final_metrics_file, json.dumps(metrics, indent=2, allow_nan=False))

  def read_final_metrics(self) -> Dict[str, Any]:
    return read_json(self.final_metrics_file)

  def write_train_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Keeps the train `metrics` logged at `step` (strict JSON, atomically) for a rerun that
    resumes there: its final metrics then hold them as an uninterrupted run's do."""
    write_json_atomically(self.train_metrics_file,
                          json.dumps({"step": step, "train": metrics}, indent=2, allow_nan=False))

  def read_train_metrics(self, step: int) -> Optional[Dict[str, Any]]:
    """The train metrics `write_train_metrics` kept for `step`, or None if none were."""
    if not os.path.exists(self.train_metrics_file):
      return None
    kept = read_json(self.train_metrics_file)
    return kept["train"] if kept.get("step") == step else None

"""What the research entry points share: flags, loading a run, reading a split as masked numpy
batches, training runs of their own (cross_validate, ablate), and where outputs go."""

import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Optional, Tuple

import ml_collections
from absl import flags, logging

from flaxflow.data import datasets, pipeline
from flaxflow.data.tf_cpu import tf
from flaxflow import analysis, tasks
from flaxflow.tasks.trained import TrainedModel
from flaxflow.workdir import Workdir
from flaxflow.launch import runs

WORKDIR = runs.define_workdir_flag("The run's workdir (evaluate, sample, transfer, tsne), or where "
                                   "the runs go (cross_validate, ablate).")


@dataclasses.dataclass(frozen=True)
class RunFlags:
  """The flags of the tools that read a trained run."""
  step: flags.FlagHolder
  use_ema: flags.FlagHolder
  output_dir: flags.FlagHolder


def define_run_flags() -> RunFlags:
  """Defines --step, --use_ema and --output_dir; call once, at import of an entry point."""
  return RunFlags(
      step=flags.DEFINE_integer("step", None, "Checkpoint step to load (default: the latest)."),
      use_ema=flags.DEFINE_bool("use_ema", True, "Use the averaged parameters if kept."),
      output_dir=flags.DEFINE_string("output_dir", None,
                                     "Where outputs go (default: WORKDIR/analysis)."))


@dataclasses.dataclass(frozen=True)
class LatentFlags:
  """The flags of the tools that read one latent of a trained run (tsne, table1)."""
  level: flags.FlagHolder
  labels: flags.FlagHolder


def define_latent_flags() -> LatentFlags:
  """Defines --level and --labels; call once, at import of an entry point."""
  return LatentFlags(
      level=flags.DEFINE_integer("level", -1, "Which latent: 0 the shallowest split, -1 the "
                                 "deepest."),
      labels=flags.DEFINE_enum(
          "labels", "predicted", list(analysis.LABEL_SOURCES),
          "The label class-conditional models encode with: predicted (the model's own "
          "Bayes'-rule label); none (the classifier's raw z1 from f); true: the test labels, "
          "which LEAKS them into the features (any classifier fitted on them learns the label "
          "from there): for pictures only."))


Batches = Callable[[], Iterator[dict]]


def start(run_flags: RunFlags) -> TrainedModel:
  """Checks --output_dir, starts the devices, then loads the run of --workdir at --step."""
  output_dir = run_flags.output_dir.value
  if output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise NotADirectoryError(f"--output_dir={output_dir}: a file, not a folder")
  runs.start_devices()
  run = tasks.load_trained(WORKDIR.value, run_flags.step.value, run_flags.use_ema.value)
  logging.info("%s: %s at step %d", WORKDIR.value, type(run.model).__name__, run.step)
  return run


def start_on_split(run_flags: RunFlags, split_flag: flags.FlagHolder):
  """`start`, then the split to read (--split, else the run's eval_split) as masked batches.

  Returns (run, split, batches, info) as `start` and `split_batches` give them.
  """
  run = start(run_flags)
  split = split_flag.value or run.config.eval_split
  batches, info = split_batches(run.config, split)
  return run, split, batches, info


def split_batches(config: Any, split: str) -> Tuple[Batches, datasets.DatasetInfo]:
  """A function giving one masked pass over `split` of the run's dataset, and the dataset's info."""
  dataset, info = runs.load_split(config, split)
  return (lambda: pipeline.eval_batches(dataset, batch_size=config.eval_batch_size)), info


def split_examples(config: Any, split: str) -> Tuple[dict, datasets.DatasetInfo]:
  """Every example of `split` in memory: {"image", "label", "subject"} arrays, and the info."""
  batches, info = split_batches(config, split)
  return analysis.collect_examples(batches()), info


def train_on_examples(config: ml_collections.ConfigDict, examples: dict, workdir: str,
                      class_names: Tuple[str, ...],
                      eval_examples: Optional[dict] = None) -> Any:
  """Trains `config.model` on in-memory `examples` into `workdir` as launch.train would, resuming a
  run left there, evaluating on `eval_examples` (if given) every `config.eval_every` steps and at
  the end; returns the final state."""
  dataset = tf.data.Dataset.from_tensor_slices({"image": examples["image"],
                                                "label": examples["label"]})
  eval_batches = None
  if eval_examples is not None:
    eval_batches = lambda: analysis.array_batches(eval_examples, config.eval_batch_size)
  return runs.train_into_workdir(config, Workdir(workdir), dataset,
                                 image_shape=examples["image"].shape[1:], class_names=class_names,
                                 eval_batches=eval_batches).state


def output_path(run_flags: RunFlags, *parts: str) -> str:
  """A path under --output_dir (default WORKDIR/analysis), its folder created."""
  folder = run_flags.output_dir.value or Workdir(WORKDIR.value).analysis
  path = os.path.join(folder, *parts)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


def write_json(path: str, content: Any) -> str:
  with open(path, "w") as file:
    json.dump(content, file, indent=2)
  return path

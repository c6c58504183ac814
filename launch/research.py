"""What the research entry points share: flags, loading a run, reading a split as masked numpy
batches, training runs of their own (cross_validate, ablate), and where outputs go."""

import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Tuple

import jax
import ml_collections
from absl import flags, logging
from clu import metric_writers

from data import datasets, pipeline
from data.tf_cpu import tf
from flaxflow import analysis, checkpointing, models, parallel, training
from launch import host_memory

WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (evaluate, sample, transfer, "
                              "tsne), or where the runs go (cross_validate, ablate).",
                              required=True)
ACCELERATOR = flags.DEFINE_enum("accelerator", None, list(parallel.ACCELERATORS),
                                "Platform to run on (default: JAX's choice).")


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


Batches = Callable[[], Iterator[dict]]


def select_platform() -> None:
  """--accelerator, before anything touches a device; quiet checkpoint logs; CPU allocator."""
  checkpointing.quiet_orbax_info_logs()
  if ACCELERATOR.value:
    parallel.select_platform(ACCELERATOR.value)
  if jax.default_backend() == "cpu":
    host_memory.retain_freed_memory()


def start(run_flags: RunFlags) -> analysis.TrainedModel:
  """Selects the platform, then loads the run of --workdir at --step."""
  select_platform()
  run = analysis.load_trained(WORKDIR.value, run_flags.step.value, run_flags.use_ema.value)
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
  dataset, info = datasets.load(config.dataset, split, config.data_dir)
  return (lambda: pipeline.eval_batches(dataset, batch_size=config.eval_batch_size)), info


def split_examples(config: Any, split: str) -> Tuple[dict, datasets.DatasetInfo]:
  """Every example of `split` in memory: {"image", "label", "subject"} arrays, and the info."""
  batches, info = split_batches(config, split)
  return analysis.collect_examples(batches()), info


def train_on_examples(config: ml_collections.ConfigDict, examples: dict, workdir: str,
                      class_names: Tuple[str, ...]) -> training.TrainState:
  """Trains `config.model` on in-memory `examples` into `workdir` as launch.train would
  (config.json, checkpoints, samples, TensorBoard), resuming a run left there; returns the final
  state."""
  model = models.create(config.model)
  training.check_model_matches_data(model, examples["image"].shape[1:], class_names,
                                    config.dataset)
  mesh = parallel.make_mesh()
  config_json = config.to_json_best_effort(indent=2)
  config_path = os.path.join(workdir, analysis.CONFIG_FILE)
  if os.path.exists(config_path) and analysis.read_config(workdir).to_dict() != json.loads(
      config_json):
    raise SystemExit(f"{workdir} holds a run of another config ({config_path}); pass a new "
                     "--workdir")
  if parallel.is_primary():
    os.makedirs(workdir, exist_ok=True)
    with open(config_path, "w") as file:
      file.write(config_json)
  dataset = tf.data.Dataset.from_tensor_slices({"image": examples["image"],
                                                "label": examples["label"]})
  train_iterator = pipeline.TrainIterator(dataset, global_batch_size=config.batch_size,
                                          sharding=parallel.batch_sharding(mesh), seed=config.seed)
  writer = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
  result = training.train(config, model=model, train_iterator=train_iterator, workdir=workdir,
                          writer=writer, class_names=class_names, mesh=mesh)
  writer.close()
  if result.stopped_early:
    raise SystemExit(f"stop requested: {workdir} saved its checkpoint; rerun the same command to "
                     "resume")
  return result.state


def output_path(run_flags: RunFlags, *parts: str) -> str:
  """A path under --output_dir (default WORKDIR/analysis), its folder created."""
  folder = run_flags.output_dir.value or os.path.join(os.path.abspath(WORKDIR.value), "analysis")
  path = os.path.join(folder, *parts)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


def write_json(path: str, content: Any) -> str:
  with open(path, "w") as file:
    json.dump(content, file, indent=2)
  return path

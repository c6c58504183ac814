"""Trains a flow: `python -m launch.train --config=launch/configs/<name>.py --workdir=DIR`.

Without --config it trains the small class-conditional BPLF of launch/configs/default.py on 32x32
synthetic faces (digits: --config=launch/configs/digits_bplf.py). Any config field can be
overridden, e.g. `--config.num_steps=200`. Rerunning the same command resumes from the latest
checkpoint in --workdir.
"""

import os

import jax
from absl import app, flags, logging
from clu import metric_writers
from ml_collections import config_flags

from data import datasets, pipeline
from flaxflow import checkpointing, models, parallel, training
from launch import host_memory

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                               "default.py")

_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and samples go here.",
                               required=True)
_ACCELERATOR = flags.DEFINE_enum("accelerator", None, list(parallel.ACCELERATORS),
                                 "Platform to run on (default: JAX's choice).")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")


def start_devices() -> None:
  """Platform first, then the multi-host service, and only then the first device access."""
  if _ACCELERATOR.value:
    parallel.select_platform(_ACCELERATOR.value)
  parallel.initialize_distributed(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  if _ACCELERATOR.value:
    parallel.check_devices(_ACCELERATOR.value)
  if jax.default_backend() == "cpu":
    host_memory.retain_freed_memory()


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  if not parallel.is_primary():
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(os.path.join(workdir,
                                                                              "tensorboard")))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
  checkpointing.quiet_orbax_info_logs()
  start_devices()
  if not parallel.is_primary():
    logging.set_verbosity(logging.WARNING)  # One progress log: process 0's.
  logging.info("%d process(es), %d device(s): %s", jax.process_count(),
               jax.device_count(), jax.devices()[0].device_kind)
  mesh = parallel.make_mesh()
  train_set, info = datasets.load(config.dataset, "train", config.data_dir)
  eval_set, _ = datasets.load(config.dataset, config.eval_split, config.data_dir)
  model = models.create(config.model)
  training.check_model_matches_data(model, info.image_shape, info.class_names, config.dataset)
  if parallel.is_primary():
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as file:
      file.write(config.to_json_best_effort(indent=2))
  train_iterator = pipeline.TrainIterator(train_set, global_batch_size=config.batch_size,
                                          sharding=parallel.batch_sharding(mesh), seed=config.seed)
  result = training.train(
      config, model=model, train_iterator=train_iterator, workdir=workdir,
      writer=create_writer(workdir), class_names=info.class_names, mesh=mesh,
      eval_batches=lambda: pipeline.eval_batches(eval_set, batch_size=config.eval_batch_size))
  if result.eval_metrics:
    logging.info("final %s %s bits/dim: %.4f", config.dataset, config.eval_split,
                 result.eval_metrics["bits_per_dim"])


if __name__ == "__main__":
  app.run(main)

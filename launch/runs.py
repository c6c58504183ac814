"""What every entry point shares: the device flags and start-up, and training into a workdir."""

from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import ml_collections
from absl import flags, logging
from clu import metric_writers

from data import pipeline
from flaxflow import checkpointing, loop, models, parallel
from launch import host_memory
from flaxflow.models.capabilities import check_model_matches_data
from flaxflow.tasks.flow import FlowTask
from flaxflow.workdir import Workdir

ACCELERATOR = flags.DEFINE_enum("accelerator", None, list(parallel.ACCELERATORS),
                                "Platform to run on (default: JAX's choice).")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")


def start_devices() -> None:
  """Platform first, then the multi-host service, and only then the first device access; quiet
  checkpoint logs, one progress log (process 0's), and the CPU allocator setting."""
  checkpointing.quiet_orbax_info_logs()
  if ACCELERATOR.value:
    parallel.select_platform(ACCELERATOR.value)
  parallel.initialize_distributed(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value,
                                  PROCESS_ID.value)
  if ACCELERATOR.value:
    parallel.check_devices(ACCELERATOR.value)
  if not parallel.is_primary():
    logging.set_verbosity(logging.WARNING)
  if jax.default_backend() == "cpu":
    host_memory.retain_freed_memory()
  logging.info("%d process(es), %d device(s): %s", jax.process_count(), jax.device_count(),
               jax.devices()[0].device_kind)


def create_writer(workdir: Workdir) -> metric_writers.MetricWriter:
  if not parallel.is_primary():
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir.tensorboard))


def train_into_workdir(config: ml_collections.ConfigDict, workdir: Workdir, train_set: Any,
                       *, image_shape: Sequence[int], class_names: Sequence[str],
                       eval_batches: Optional[Callable[[], Iterable[dict]]] = None
                       ) -> loop.TrainResult:
  """Trains `config.model` on the `tf.data` examples `train_set` into `workdir` (config.json,
  checkpoints, samples, TensorBoard, final metrics), resuming a run of the same config left
  there."""
  model = models.create(config.model)
  check_model_matches_data(model, image_shape, class_names, config.dataset)
  if parallel.is_primary():
    workdir.write_config(config)
  mesh = parallel.make_mesh()
  train_iterator = pipeline.TrainIterator(train_set, global_batch_size=config.batch_size,
                                          sharding=parallel.batch_sharding(mesh), seed=config.seed)
  task = FlowTask(config, model, mesh, class_names, eval_batches)
  writer = create_writer(workdir)
  try:
    return loop.train(task, config, train_iterator=train_iterator, workdir=workdir, writer=writer,
                      mesh=mesh)
  finally:
    writer.close()

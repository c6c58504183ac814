"""What every entry point shares: the device flags and start-up, the config flag, one-line user
errors with documented exit codes, and training into a workdir.

Exit codes of the entry points (`run_main`): 0 done; 1 an unexpected failure (with a traceback) or
a full disk; 2 a user error (flag, config, path, platform, a workdir of another config or in use by
another process), printed as one line; 3 training diverged (`flaxflow.loop.NonFiniteError`);
75 (EX_TEMPFAIL) stopped by SIGTERM at any moment after start-up (training saves a checkpoint
first): rerun the same command to resume.
"""

import contextlib
import errno
import os
import sys
from typing import Any, Callable, Iterable, NoReturn, Optional, Sequence

import jax
import ml_collections
from absl import app, flags, logging
from clu import metric_writers
from ml_collections import config_flags

from flaxflow.data import datasets, pipeline
from flaxflow import checkpointing, config_checks, loop, parallel, tasks
from flaxflow.workdir import Workdir, WorkdirInUseError
from flaxflow.launch import host_memory

ACCELERATOR = flags.DEFINE_enum("accelerator", None, list(parallel.ACCELERATORS),
                                "Platform to run on (default: JAX's choice).")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")


EXIT_UNEXPECTED = 1
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75
# Errors whose message says all a user needs: printed as one line, the traceback only at -v 1.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, WorkdirInUseError, parallel.PlatformError,
               datasets.DownloadError)
PREEMPTED_MESSAGE = "preempted (SIGTERM); rerun the same command to resume"


def exit_with_message(code: int, message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _config_file_in(argv: Sequence[str]) -> Optional[str]:
  """The file of the last `--config=FILE[:ARG]` in `argv`, if any."""
  paths = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("--config=")]
  return paths[-1].split(":")[0] if paths else None


def _config_file_error(path: str, error: BaseException) -> str:
  if not os.path.isfile(path):
    return f"--config={path}: no such file"
  return f"--config={path}: {error.__cause__ or error}"


def define_config_flag(default_file: str, help_text: str) -> flags.FlagHolder:
  """`--config=FILE[:ARG]` with `--config.<field>=<value>` overrides. ml_collections applies the
  overrides as the flag is defined; a failure then (a field the config lacks, a config file that
  does not load) ends the program with one line."""
  try:
    return config_flags.DEFINE_config_file("config", default_file, help_text)
  except (KeyError, AttributeError) as error:
    _exit_on_unknown_field(error, sys.argv)
  except OSError as error:
    exit_with_message(EXIT_USER_ERROR,
                      _config_file_error(_config_file_in(sys.argv) or default_file, error))


def config_from_flag(config_flag: flags.FlagHolder) -> ml_collections.ConfigDict:
  """The loaded config, or a one-line error naming the config file that failed to load."""
  path = config_flags.get_config_filename(flags.FLAGS[config_flag.name]).split(":")[0]
  try:
    config = config_flag.value
    config.keys()  # ml_collections defers a load failure to the config's first use.
    return config
  except OSError as error:
    raise ValueError(_config_file_error(path, error)) from error


def _exit_on_unknown_field(error: Exception, argv: Sequence[str]) -> None:
  """One line naming the `--config.` override whose field the config lacks."""
  field = str(error).strip("\"'")
  overrides = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
  named = [flag for flag in overrides if flag.split(".")[-1] == field] or overrides
  exit_with_message(EXIT_USER_ERROR, f"{' '.join(named)}: the config has no field {field!r}")


def _exit_on_known_errors(main: Callable[[Sequence[str]], None], argv: Sequence[str]) -> None:
  try:
    with checkpointing.preempt_on_sigterm():
      main(argv)
  except checkpointing.Preempted:
    exit_with_message(EXIT_PREEMPTED, PREEMPTED_MESSAGE)
  except app.UsageError as error:  # A flag's value the entry point refuses.
    exit_with_message(EXIT_USER_ERROR, str(error))
  except loop.NonFiniteError as error:
    exit_with_message(EXIT_DIVERGED, str(error))
  except USER_ERRORS as error:
    logging.debug("the error's traceback", exc_info=True)
    exit_with_message(EXIT_USER_ERROR, str(error))
  except OSError as error:
    if error.errno != errno.ENOSPC:
      raise
    exit_with_message(EXIT_UNEXPECTED, f"disk full: {error}")


def _parse_flags(argv: Sequence[str]) -> Sequence[str]:
  """absl's flag parsing, where a config file that fails to load or an override of a field it
  lacks (with overrides, ml_collections loads it here) is one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # An unknown flag, a value of the wrong type, a missing flag.
    exit_with_message(EXIT_USER_ERROR, str(error).replace("\n", " "))
  except (KeyError, AttributeError) as error:
    # With an explicit --config file, ml_collections applies the overrides while parsing.
    _exit_on_unknown_field(error, argv)
  except OSError as error:
    path = _config_file_in(argv)
    if path is None:
      raise
    exit_with_message(EXIT_USER_ERROR, _config_file_error(path, error))


def run_main(main: Callable[[Sequence[str]], None]) -> None:
  """`absl.app.run(main)` with the exit codes and one-line errors of this module's docstring."""
  app.run(lambda argv: _exit_on_known_errors(main, argv), flags_parser=_parse_flags)


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


def load_split(config: ml_collections.ConfigDict, split: str) -> datasets.Loaded:
  """`split` of the run's dataset, read as `config` says (`data_dir`, `download`,
  `dataset_options`; runs from before `download` existed may use the network)."""
  return datasets.load(config.dataset, split, config.data_dir,
                       download=config.get("download", True), **dataset_options(config))


def dataset_options(config: ml_collections.ConfigDict) -> dict:
  """The run's options of `datasets.load` beyond the dataset's name (none for runs from
  before `dataset_options` existed)."""
  return config.get("dataset_options", ml_collections.ConfigDict()).to_dict()


def define_workdir_flag(help_text: str) -> flags.FlagHolder:
  """The required `--workdir`; an empty value (e.g. an unset shell variable), which would name
  the working directory itself, is refused."""
  workdir = flags.DEFINE_string("workdir", None, help_text, required=True)
  flags.register_validator("workdir", lambda path: path is None or bool(path.strip()),
                           "expected a folder, got an empty path")
  return workdir


def create_writer(workdir: Workdir) -> metric_writers.MetricWriter:
  if not parallel.is_primary():
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir.tensorboard))


def check_training_config(config: ml_collections.ConfigDict) -> None:
  """Every field the loop and the model family's task read, checked before any data is loaded."""
  loop.check_config(config)
  tasks.check_config(config)


def train_into_workdir(config: ml_collections.ConfigDict, workdir: Workdir, train_set: Any,
                       *, image_shape: Sequence[int], class_names: Sequence[str],
                       eval_batches: Optional[Callable[[], Iterable[dict]]] = None,
                       synthetic_faces: Optional[Callable[[], Any]] = None
                       ) -> loop.TrainResult:
  """Trains `config.model` on the `tf.data` examples `train_set` into `workdir` (config.json,
  checkpoints, samples, TensorBoard, final metrics), resuming a run of the same config left
  there; a family that scores itself against ground truth while it trains gets
  `synthetic_faces` (`tasks.takes_synthetic_faces`), and its training batches carry
  `tasks.batch_features(config)`; a run stopped by SIGTERM raises `checkpointing.Preempted` once
  its checkpoint is saved. Every config field is checked, and the workdir locked and its config
  compared, before anything in it is written."""
  check_training_config(config)
  mesh = parallel.make_mesh()
  config_checks.multiple_of(config, "batch_size", mesh.size, f"the {mesh.size} devices")
  options = ({"synthetic_faces": synthetic_faces}
             if synthetic_faces is not None and tasks.takes_synthetic_faces(config) else {})
  task = tasks.family_of(config).create_task(
      config, mesh, image_shape=image_shape, class_names=class_names, eval_batches=eval_batches,
      train_batches=lambda: pipeline.eval_batches(train_set, batch_size=config.eval_batch_size),
      **options)
  workdir.check_is_folder()
  with workdir.lock() if parallel.is_primary() else contextlib.nullcontext():
    workdir.check_config_matches(config)
    train_iterator = pipeline.TrainIterator(train_set, global_batch_size=config.batch_size,
                                            sharding=parallel.batch_sharding(mesh),
                                            seed=config.seed,
                                            features=tasks.batch_features(config))
    writer = create_writer(workdir)
    try:
      result = loop.train(task, config, train_iterator=train_iterator, workdir=workdir,
                          writer=writer, mesh=mesh)
    finally:
      writer.close()
  if result.stopped_early:
    raise checkpointing.Preempted(f"{workdir.path} saved its checkpoint")
  return result

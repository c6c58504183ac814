"""Tests of `python -m launch.train` and of every config in launch/configs/."""

import glob
import importlib.util
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import app
from PIL import Image

from flaxflow import checkpointing, tasks
from flaxflow.launch import runs
from training_helpers import CHILD_TIMEOUT_S

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "launch", "configs")
CONFIG_FILES = sorted(path for path in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
                      if os.path.basename(path) not in ("__init__.py", "common.py"))
# The digits config shrunk to seconds: one step per level, narrow nets, small batches.
TINY = ["--accelerator=cpu", f"--config={os.path.join(CONFIG_DIR, 'digits_bplf.py')}",
        "--config.batch_size=16", "--config.model.steps_per_level=1",
        "--config.model.width=8", "--config.log_every=1", "--config.eval_batch_size=120",
        "--config.samples_per_class=3"]


def load_config(path, argument=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if argument is None else module.get_config(argument)


def launch(workdir, *flags, log_name=None, env=None):
  """Starts a run whose output goes to a file beside its workdir (a full pipe would stall it)."""
  log = open(log_name or f"{workdir}.log", "a")
  process = subprocess.Popen([sys.executable, "-m", "launch.train", f"--workdir={workdir}", *flags],
                             cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                             env=env)
  log.close()
  return process


def output(workdir):
  with open(f"{workdir}.log") as log:
    return log.read()


def finish(process, workdir):
  process.wait(timeout=CHILD_TIMEOUT_S)
  assert process.returncode == 0, output(workdir)[-3000:]
  return output(workdir)


def refused(process, workdir, code=runs.EXIT_USER_ERROR):
  """The last line of a run that must end with `code` and a one-line error."""
  process.wait(timeout=CHILD_TIMEOUT_S)
  log = output(workdir)
  assert process.returncode == code, log[-3000:]
  assert "Traceback" not in log
  return log.rstrip().splitlines()[-1]


def checkpoint_steps(workdir):
  """Complete checkpoints only: Orbax gives a step its plain number once the save is committed."""
  directory = os.path.join(workdir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(name) for name in names if name.isdigit())


def wait_for(condition, process, workdir):
  deadline = time.monotonic() + CHILD_TIMEOUT_S
  while not condition():
    assert process.poll() is None and time.monotonic() < deadline, output(workdir)[-3000:]
    time.sleep(0.05)


def final_metrics(workdir):
  with open(os.path.join(workdir, "final_metrics.json")) as file:
    return json.load(file)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_builds_its_model(path):
  config = load_config(path)
  assert config.dataset and config.num_steps > 0
  tasks.check_config(config)
  family = tasks.family_of(config)
  variables = jax.eval_shape(lambda: family.init_variables(config, jax.random.PRNGKey(0)))
  assert jax.tree.leaves(variables["params"])
  # What a family declares it takes is what its create_task accepts.
  accepts = "synthetic_faces" in inspect.signature(family.create_task).parameters
  assert tasks.takes_synthetic_faces(config) == accepts


def test_emotion_set_config_takes_the_image_size():
  path = os.path.join(CONFIG_DIR, "emotion_set_bplf.py")
  config = load_config(path, "48")
  assert config.dataset == "emotion_set/48" and tuple(config.model.image_shape) == (48, 48, 1)
  with pytest.raises(ValueError, match="emotion_set_bplf.py:32"):
    load_config(path, "32")


def test_missing_accelerator_is_a_clear_error(tmp_path):
  last = refused(launch(tmp_path / "run", "--accelerator=tpu"), tmp_path / "run")
  assert last.startswith("error: --accelerator=tpu: JAX found no tpu devices")


@pytest.mark.parametrize("flag, message", [
    ("--config.foo=1", "error: --config.foo: the config has no field 'foo'"),
    ("--config.keep_checkpoints=0",
     "error: --config.keep_checkpoints=0: expected a positive integer"),
    ("--config.optimizer.learning_rate=nan",
     "error: --config.optimizer.learning_rate=nan: expected a finite number > 0"),
    ("--config.log_every=0", "error: --config.log_every=0: expected a positive integer"),
    ("--config.model.name=gan",
     "error: --config.model.name='gan': expected one of "
     + ", ".join(sorted(name for family in tasks.FAMILIES for name in family.MODEL_NAMES))),
    ("--config=launch/configs/missing.py",
     "error: --config=launch/configs/missing.py: no such file"),
    ("--no_such_flag=1", "error: Unknown command line flag 'no_such_flag'"),
    ("--workdir=", "error: flag --workdir=: expected a folder, got an empty path"),
])
def test_a_user_error_is_one_line_and_exit_code_2_before_the_workdir_is_touched(tmp_path, flag,
                                                                               message):
  # A config file takes the place of TINY's; an override comes after TINY's, which it replaces.
  flags = ([flag if option.startswith("--config=") else option for option in TINY]
           if flag.startswith("--config=") else [*TINY, flag])
  assert refused(launch(tmp_path / "run", *flags), tmp_path / "run") == message
  assert runs.EXIT_USER_ERROR == 2 and not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_is_one_line_and_the_file_kept(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("mine")
  assert refused(launch(path, *TINY), path) == (f"error: workdir {path} is a file, not a folder; "
                                                "pass another --workdir")
  assert path.read_text() == "mine"


def test_a_batch_size_the_devices_do_not_divide_is_refused_before_the_workdir_is_made(tmp_path):
  two_devices = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  last = refused(launch(tmp_path / "run", *TINY, "--config.batch_size=3", env=two_devices),
                 tmp_path / "run")
  assert last == "error: --config.batch_size=3: expected a multiple of the 2 devices"
  assert not (tmp_path / "run").exists()


def test_offline_mnist_with_a_wrong_data_dir_names_the_missing_files_at_once(tmp_path):
  empty = tmp_path / "no_archives"
  empty.mkdir()
  process = launch(tmp_path / "run", "--accelerator=cpu",
                   f"--config={os.path.join(CONFIG_DIR, 'mnist_bplf.py')}",
                   f"--config.data_dir={empty}", "--config.download=False")
  # The message is of the offline path: downloading would retry for minutes, then say another.
  last = refused(process, tmp_path / "run")
  assert last.startswith(f"error: data_dir {empty} lacks the MNIST file(s) ")
  assert "train-images-idx3-ubyte.gz" in last


@pytest.mark.slow
def test_a_rerun_with_another_model_config_is_refused_and_config_json_kept(tmp_path):
  workdir = tmp_path / "run"
  finish(launch(workdir, *TINY, "--config.num_steps=2", "--config.checkpoint_every=2"), workdir)
  before = (workdir / "config.json").read_text()
  process = launch(workdir, *TINY, "--config.num_steps=4", "--config.model.width=16",
                   "--config.seed=3")
  refused(process, workdir)
  lines = output(workdir).rstrip().splitlines()
  assert "holds a run of another config" in lines[-3]
  assert lines[-2:] == ["  model.width: 8 -> 16", "  seed: 0 -> 3"]
  assert (workdir / "config.json").read_text() == before and checkpoint_steps(workdir) == [2]


@pytest.mark.slow
def test_tiny_run_leaves_checkpoints_metrics_samples_and_test_bits_per_dim(tmp_path):
  workdir = tmp_path / "run"
  finish(launch(workdir, *TINY, "--config.num_steps=8", "--config.checkpoint_every=4",
                "--config.sample_every=4"), workdir)
  assert checkpoint_steps(workdir) == [4, 8]
  final = final_metrics(workdir)
  assert final["step"] == 8 and 0 < final["eval"]["bits_per_dim"] < 100
  assert json.loads((workdir / "config.json").read_text())["dataset"] == "digits"
  assert sorted(os.listdir(workdir / "samples")) == ["step_0000004.png", "step_0000008.png"]
  with Image.open(workdir / "samples" / "step_0000008.png") as grid:
    assert grid.size[1] > grid.size[0] * 2  # 10 rows (digits) of 3 samples, labels at the left.
  assert glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))


@pytest.mark.slow
def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
  flags = [*TINY, "--config.num_steps=60", "--config.checkpoint_every=10",
           "--config.model.width=16"]
  reference_dir, interrupted = tmp_path / "reference", tmp_path / "interrupted"
  finish(launch(reference_dir, *flags), reference_dir)
  process = launch(interrupted, *flags)
  wait_for(lambda: checkpoint_steps(interrupted), process, interrupted)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=CHILD_TIMEOUT_S)
  killed_at = checkpoint_steps(interrupted)[-1]
  assert killed_at < 60 and not (interrupted / "final_metrics.json").exists()

  log = finish(launch(interrupted, *flags), interrupted)
  assert f"resumed from the checkpoint of step {killed_at}" in log
  resumed, reference = final_metrics(interrupted), final_metrics(reference_dir)
  for metrics in (resumed, reference):
    del metrics["train"]["images_per_second"]
  assert resumed == reference


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_the_preempted_code(tmp_path):
  workdir = tmp_path / "run"
  process = launch(workdir, *TINY, "--config.num_steps=100000", "--config.checkpoint_every=1000")
  wait_for(lambda: "step 3/100000" in output(workdir), process, workdir)
  process.send_signal(signal.SIGTERM)
  assert refused(process, workdir, runs.EXIT_PREEMPTED) == f"error: {runs.PREEMPTED_MESSAGE}"
  assert runs.EXIT_PREEMPTED == 75
  log = output(workdir)
  steps = checkpoint_steps(workdir)
  assert len(steps) == 1 and 3 <= steps[0] < 1000
  assert f"the last checkpoint is of step {steps[0]}" in log
  assert not (workdir / "final_metrics.json").exists()


@pytest.mark.slow
def test_sigterm_during_start_up_exits_with_the_preempted_code(tmp_path):
  workdir = tmp_path / "run"
  process = launch(workdir, *TINY, "--config.num_steps=4")
  # Logged once the devices are up; loading the data and compiling follow.
  wait_for(lambda: "process(es)" in output(workdir), process, workdir)
  process.send_signal(signal.SIGTERM)
  assert refused(process, workdir, runs.EXIT_PREEMPTED) == f"error: {runs.PREEMPTED_MESSAGE}"


@pytest.mark.slow
def test_a_diverged_run_is_rescued_by_the_same_command_with_a_lower_learning_rate(tmp_path):
  # At 1e3 the second step's update (the first one of the warm-up is 0) is finite but throws the
  # parameters far off, and every later update is non-finite.
  workdir = tmp_path / "run"
  flags = [*TINY, "--config.num_steps=6", "--config.checkpoint_every=1",
           "--config.max_consecutive_nonfinite=3"]
  last = refused(launch(workdir, *flags, "--config.optimizer.learning_rate=1e3"), workdir,
                 runs.EXIT_DIVERGED)
  assert last.startswith("error: training diverged: the updates at steps 3..5 were skipped")
  assert f"the last checkpoint, of step 1 in {workdir / 'checkpoints'}, is healthy" in last
  assert checkpoint_steps(workdir) == [1]
  log = finish(launch(workdir, *flags, "--config.optimizer.learning_rate=2e-3"), workdir)
  assert "resumed from the checkpoint of step 1" in log
  final = final_metrics(workdir)
  assert final["step"] == 6 and np.isfinite(list(final["eval"].values())).all()


@pytest.mark.slow
def test_two_processes_train_together_and_only_process_0_writes(tmp_path):
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    address = f"localhost:{sock.getsockname()[1]}"
  workdir = tmp_path / "run"
  processes = [launch(workdir, *TINY, "--config.num_steps=4", "--config.checkpoint_every=2",
                      f"--coordinator_address={address}", "--num_processes=2",
                      f"--process_id={index}", log_name=f"{workdir}.{index}.log")
               for index in range(2)]
  logs = []
  for index, process in enumerate(processes):
    process.wait(timeout=CHILD_TIMEOUT_S)
    with open(f"{workdir}.{index}.log") as log:
      logs.append(log.read())
    assert process.returncode == 0, logs[-1][-3000:]
  assert "2 process(es), 2 device(s)" in logs[0] and "step 4/4" in logs[0]
  assert "step 4/4" not in logs[1]
  assert checkpoint_steps(workdir) == [2, 4]
  assert final_metrics(workdir)["step"] == 4
  assert len(glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))) == 1


def test_default_config_trains_on_synthetic_faces_of_the_given_size():
  path = os.path.join(CONFIG_DIR, "default.py")
  assert load_config(path).dataset == "synthetic_faces/32"
  config = load_config(path, "48")
  assert config.dataset == "synthetic_faces/48" and tuple(config.model.image_shape) == (48, 48, 1)
  with pytest.raises(ValueError, match="default.py:64"):
    load_config(path, "64")


def _raise(error):
  def main(argv):
    raise error
  return main


@pytest.mark.parametrize("error, code, message", [
    (ValueError("--config.x=0: expected a positive integer"), 2,
     "error: --config.x=0: expected a positive integer"),
    (FileNotFoundError("no such file"), 2, "error: no such file"),
    (runs.WorkdirInUseError("W is in use by process 7"), 2, "error: W is in use by process 7"),
    (runs.loop.NonFiniteError("the updates at steps 3..5 were skipped"), 3,
     "error: the updates at steps 3..5 were skipped"),
    (OSError(28, "No space left on device"), 1,
     "error: disk full: [Errno 28] No space left on device"),
    (FileExistsError(17, "File exists", "W/lock"), 2, "error: [Errno 17] File exists: 'W/lock'"),
    (app.UsageError("--inputs=9: expected indices in [0, 9)"), 2,
     "error: --inputs=9: expected indices in [0, 9)"),
    (checkpointing.Preempted("SIGTERM"), 75, f"error: {runs.PREEMPTED_MESSAGE}"),
])
def test_known_errors_exit_with_their_code_and_one_line(capsys, error, code, message):
  with pytest.raises(SystemExit) as exit_info:
    runs._exit_on_known_errors(_raise(error), ["train"])
  assert exit_info.value.code == code
  assert capsys.readouterr().err == message + "\n"


def test_an_unexpected_error_keeps_its_traceback():
  with pytest.raises(OSError, match="Input/output error"):
    runs._exit_on_known_errors(_raise(OSError(5, "Input/output error")), ["train"])

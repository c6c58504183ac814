"""An in-memory data iterator, a recording metric writer, a worker on simulated devices, and a
stopped copy of a finished run, for tests of the training loop."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from flaxflow import checkpointing, parallel


# A child process's time limit only ends a hung test. A loaded 2-core machine ran the suite 5 times
# slower than a quiet one, and the slowest child of a quiet run takes about a minute: the limit
# is far above both, so that a slow machine never fails a test.
CHILD_TIMEOUT_S = 1800


class ArrayIterator:
  """Epoch-shuffled global batches of in-memory arrays (images, labels and any `features`); its
  state is the number of batches drawn. The images of the batches numbered in `nan_batches` (0 the
  first) are NaN, a corrupt record."""

  def __init__(self, images, labels, *, global_batch_size, sharding, seed=0, features=None,
               nan_batches=()):
    self.images, self.labels, self.features = images, labels, dict(features or {})
    self.batch_size, self.sharding, self.seed = global_batch_size, sharding, seed
    self.nan_batches = frozenset(nan_batches)
    self.batches_drawn = 0

  def __iter__(self):
    return self

  def __next__(self):
    per_epoch = len(self.images) // self.batch_size
    epoch, index = divmod(self.batches_drawn, per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
    chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
    batch = {"image": self.images[chosen], "label": self.labels[chosen],
             **{name: values[chosen] for name, values in self.features.items()}}
    if self.batches_drawn in self.nan_batches:
      batch["image"] = np.full_like(batch["image"], np.nan)
    self.batches_drawn += 1
    return parallel.global_batch_from_full(batch, self.sharding)

  def get_state(self):
    return {"batches_drawn": self.batches_drawn}

  def set_state(self, state):
    self.batches_drawn = state["batches_drawn"]


class RecordingWriter:
  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(step, {}).update(scalars)

  def flush(self):
    pass


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_together(commands, environment) -> list:
  """Runs the `commands` (argument lists) side by side in REPO_ROOT, as the processes of one job,
  and returns the JSON each printed on its line starting with "RESULT ".

  Output goes to files, not pipes, so that no process blocks on a full pipe while another is
  waited for. A process still running at CHILD_TIMEOUT_S is aborted. A failure names every
  process's exit status and the end of its stderr: in a
  multi-process job the first to fail is often only waiting for the one that went wrong, and
  PYTHONFAULTHANDLER makes an aborted process print where each of its threads was.
  """
  environment = dict(environment, PYTHONFAULTHANDLER="1")
  with contextlib.ExitStack() as stack:
    outputs = [(stack.enter_context(tempfile.TemporaryFile("w+")),
                stack.enter_context(tempfile.TemporaryFile("w+"))) for _ in commands]
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=stdout,
                                  stderr=stderr, text=True)
                 for command, (stdout, stderr) in zip(commands, outputs)]
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
      for process in processes:
        process.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
      pass  # Reported below, with where each process still running was.
    finally:
      for process in processes:
        if process.poll() is None:
          process.send_signal(signal.SIGABRT)  # The fault handler prints its threads' stacks.
          try:
            process.wait(timeout=60)
          except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    texts = []
    for stdout, stderr in outputs:
      stdout.seek(0)
      stderr.seek(0)
      texts.append((stdout.read(), stderr.read()))
  failures = [f"process {index} exited with {process.returncode}:\n{stderr[-3000:]}"
              for index, (process, (_, stderr)) in enumerate(zip(processes, texts))
              if process.returncode != 0]
  assert not failures, "\n".join(failures)
  return [json.loads(next(line for line in stdout.splitlines()
                          if line.startswith("RESULT "))[len("RESULT "):])
          for stdout, _ in texts]


def run_on_simulated_devices(worker_source: str, workdir, devices: int) -> dict:
  """Runs `worker_source` (Python; argv[1] is `workdir`) on `devices` simulated CPU devices in a
  fresh process, and returns the JSON it printed on its line starting with "RESULT "."""
  environment = dict(os.environ, JAX_PLATFORMS="cpu",
                     XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return run_together([[sys.executable, "-c", worker_source, str(workdir)]], environment)[0]


def stopped_copy(finished, stopped, save_interval_steps):
  """Copies the checkpoints of the run in `finished` into `stopped` without the last one: a run
  stopped after the checkpoint before it (cheaper than training it). Returns the finished run's
  checkpoint steps."""
  shutil.copytree(os.path.join(finished, "checkpoints"), os.path.join(stopped, "checkpoints"))
  manager = checkpointing.create_manager(os.path.join(stopped, "checkpoints"),
                                         save_interval_steps=save_interval_steps)
  steps = list(manager.all_steps())
  manager.delete(steps[-1])
  manager.close()
  return steps

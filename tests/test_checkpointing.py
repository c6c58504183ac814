"""Tests of flaxflow.checkpointing: round trip with the data state, atomic saves, SIGTERM."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow import checkpointing, parallel
from training_helpers import CHILD_TIMEOUT_S

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example_state(scale=1.0):
  return {"step": jnp.int32(3), "params": {"w": scale * jnp.arange(6.0).reshape(2, 3)},
          "ema_params": None}


def abstract(state):
  replicated = parallel.replicated_sharding(parallel.make_mesh())
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                        sharding=replicated), state)


def test_round_trip_keeps_the_state_and_the_data_position(tmp_path):
  manager = checkpointing.create_manager(str(tmp_path), save_interval_steps=5)
  assert not checkpointing.save(manager, 3, example_state(), {"batches_drawn": 3})
  assert checkpointing.save(manager, 5, example_state(2.0), {"batches_drawn": 5, "epoch": 0})
  manager.wait_until_finished()
  manager.close()
  reopened = checkpointing.create_manager(str(tmp_path), save_interval_steps=5)
  assert reopened.all_steps() == [5]
  state, data_state = checkpointing.restore(reopened, abstract(example_state()))
  np.testing.assert_array_equal(state["params"]["w"], 2.0 * np.arange(6.0).reshape(2, 3))
  assert state["ema_params"] is None and int(state["step"]) == 3
  assert data_state == {"batches_drawn": 5, "epoch": 0}


def test_restore_without_a_checkpoint_names_the_directory(tmp_path):
  manager = checkpointing.create_manager(str(tmp_path / "empty"), save_interval_steps=1)
  with pytest.raises(FileNotFoundError, match="empty"):
    checkpointing.restore(manager, abstract(example_state()))


def test_save_interval_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="save_interval_steps=0"):
    checkpointing.create_manager(str(tmp_path), save_interval_steps=0)


_CRASH_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from flaxflow import checkpointing

    manager = checkpointing.create_manager(sys.argv[1], save_interval_steps=1)
    checkpointing.save(manager, 1, {"w": jnp.ones(4)}, {"batches_drawn": 1})
    manager.wait_until_finished()

    async def die_before_commit(self):
      # Every file of the step is written; the process dies before the rename that commits it.
      os.kill(os.getpid(), signal.SIGKILL)

    atomicity.AtomicRenameTemporaryPath.finalize = die_before_commit
    checkpointing.save(manager, 2, {"w": 2 * jnp.ones(4)}, {"batches_drawn": 2})
    manager.wait_until_finished()
""")


def test_a_save_killed_before_its_commit_is_never_loaded(tmp_path):
  directory = tmp_path / "checkpoints"
  process = subprocess.run([sys.executable, "-c", _CRASH_DURING_SAVE, str(directory)],
                           cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=CHILD_TIMEOUT_S)
  assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
  leftovers = [name for name in os.listdir(directory) if name != "1"]
  assert leftovers and all(name.startswith("2.") for name in leftovers)
  manager = checkpointing.create_manager(str(directory), save_interval_steps=1)
  assert manager.latest_step() == 1
  state, data_state = checkpointing.restore(manager, abstract({"w": jnp.zeros(4)}))
  np.testing.assert_array_equal(state["w"], np.ones(4))
  assert data_state == {"batches_drawn": 1}


def test_sigterm_requests_a_stop_and_the_handler_is_restored(tmp_path):
  manager = checkpointing.create_manager(str(tmp_path), save_interval_steps=1)
  before = signal.getsignal(signal.SIGTERM)
  with checkpointing.StopRequest() as stop_request:
    assert not stop_request.should_stop(manager, 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop_request.should_stop(manager, 2)
  assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_during_a_restore_is_no_unreadable_checkpoint(tmp_path, monkeypatch):
  manager = checkpointing.create_manager(str(tmp_path), save_interval_steps=1)
  for step in (1, 2):
    checkpointing.save(manager, step, example_state(step), {"batches_drawn": step})
  manager.wait_until_finished()

  def preempted(*args, **kwargs):
    raise checkpointing.Preempted("SIGTERM")

  monkeypatch.setattr(checkpointing, "restore", preempted)
  with pytest.raises(checkpointing.Preempted):  # Not taken for an unreadable checkpoint 2.
    checkpointing.restore_latest_readable(manager, abstract(example_state()))
  manager.close()
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_an_unused_path_never_overwrites_an_earlier_copy(tmp_path):
  path = str(tmp_path / "unreadable_8")
  assert checkpointing._unused_path(path) == path
  os.mkdir(path)
  os.mkdir(f"{path}.1")
  assert checkpointing._unused_path(path) == f"{path}.2"


def _raise_unraisable_in(filename):
  """Drops an object whose finaliser raises from code compiled as `filename`: Python passes
  that error to `sys.unraisablehook`."""
  namespace = {}
  exec(compile("class Finalised:\n  def __del__(self):\n    raise ValueError('an echo of the "
               "reported error')\n", filename, "exec"), namespace)
  namespace["Finalised"]()


def test_orbax_shutdown_noise_is_dropped_and_other_unraisable_errors_kept(capsys, monkeypatch):
  monkeypatch.setattr(sys, "unraisablehook", checkpointing._drop_orbax_unraisable)
  _raise_unraisable_in("/venv/orbax/serialization.py")
  assert capsys.readouterr().err == ""
  _raise_unraisable_in("/elsewhere/module.py")
  assert "an echo of the reported error" in capsys.readouterr().err

"""The workdir's config contract and its lock."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from flaxflow.workdir import Workdir, WorkdirInUseError, config_differences

CONFIG = {"seed": 0, "num_steps": 10, "model": {"name": "bplf", "width": 32},
          "optimizer": {"name": "adam", "learning_rate": 1e-3}}


def changed(**fields):
  config = ml_collections.ConfigDict(CONFIG)
  config.update_from_flattened_dict(fields)
  return config


def test_config_differences_name_each_contract_field_on_its_own_line():
  new = changed(**{"model.width": 16, "optimizer.name": "adamax", "num_steps": 99,
                   "optimizer.learning_rate": 1e-4}).to_dict()
  assert config_differences(CONFIG, new) == ["model.width: 32 -> 16",
                                             "optimizer.name: 'adam' -> 'adamax'"]
  assert config_differences(CONFIG, {**CONFIG, "extra": 1}) == ["extra: '(absent)' -> 1"]


def test_a_changed_config_is_refused_and_config_json_left_unchanged(tmp_path):
  workdir = Workdir(str(tmp_path))
  workdir.write_config(ml_collections.ConfigDict(CONFIG))
  before = (tmp_path / "config.json").read_text()
  with pytest.raises(ValueError, match=r"another config .*\n  model.width: 32 -> 16$"):
    workdir.check_config_matches(changed(**{"model.width": 16}))
  assert (tmp_path / "config.json").read_text() == before
  workdir.check_config_matches(changed(num_steps=20, **{"optimizer.learning_rate": 1e-4}))
  assert json.loads(before)["model"]["width"] == 32


HOLD_LOCK = """
import sys, time
from flaxflow.workdir import Workdir
with Workdir(sys.argv[1]).lock():
  print("locked", flush=True)
  time.sleep(600)
"""


def test_the_lock_stops_a_second_process_and_a_dead_holders_lock_is_taken_over(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirInUseError, match=f"in use by process {holder.pid} on "):
      with Workdir(str(tmp_path)).lock():
        pass
  finally:
    holder.kill()
    holder.wait()
  assert (tmp_path / "lock").exists()  # Killed: the file stays, its flock is gone.
  with Workdir(str(tmp_path)).lock():
    assert (tmp_path / "lock").read_text().startswith(f"process {os.getpid()} ")


def test_final_metrics_are_replaced_whole_and_a_garbled_file_is_named(tmp_path, monkeypatch):
  workdir = Workdir(str(tmp_path))
  workdir.write_final_metrics({"step": 4, "eval": {"loss": 1.5}})
  before = (tmp_path / "final_metrics.json").read_text()

  def crash(*args):
    raise KeyboardInterrupt("killed before the rename")

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(KeyboardInterrupt):
    workdir.write_final_metrics({"step": 8, "eval": {"loss": 1.2}})
  assert (tmp_path / "final_metrics.json").read_text() == before
  monkeypatch.undo()
  (tmp_path / "final_metrics.json").write_text(before[:20])  # Truncated by hand.
  with pytest.raises(ValueError, match=f"^{tmp_path / 'final_metrics.json'}:3: not valid JSON"):
    workdir.read_final_metrics()


def test_a_workdir_that_is_a_file_is_refused_and_the_file_kept(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("mine")
  for use in (lambda workdir: workdir.lock().__enter__(), Workdir.read_config):
    with pytest.raises(NotADirectoryError, match=f"^workdir {path} is a file, not a folder"):
      use(Workdir(str(path)))
  assert path.read_text() == "mine"

"""The installed package layout: data/ and launch/ install as flaxflow.data and flaxflow.launch."""

import configparser
import json
import math
import os
import subprocess
import sys

import pytest

from training_helpers import CHILD_TIMEOUT_S

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folders of the repository and the package names they install as.
INSTALLED_AS = {"flaxflow": "flaxflow", "data": "flaxflow.data", "launch": "flaxflow.launch"}


def _declared() -> configparser.SectionProxy:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(REPO_ROOT, "setup.cfg"))
  return parser["options"]


def _python_folders(top: str):
  """Every folder under `top` (itself included) that holds a Python module."""
  for folder, subfolders, files in os.walk(os.path.join(REPO_ROOT, top)):
    subfolders[:] = [name for name in subfolders if name != "__pycache__"]
    if any(name.endswith(".py") for name in files):
      yield os.path.relpath(folder, REPO_ROOT)


def test_setup_cfg_lists_every_package_of_the_tree_with_an_init():
  declared = set(_declared()["packages"].split())
  in_tree = set()
  for top, installed_as in INSTALLED_AS.items():
    for folder in _python_folders(top):
      assert os.path.isfile(os.path.join(REPO_ROOT, folder, "__init__.py")), (
          f"{folder} holds modules but no __init__.py, so a non-editable install leaves it out")
      in_tree.add(installed_as + folder[len(top):].replace(os.sep, "."))
  assert declared == in_tree


def test_data_and_launch_are_mapped_into_the_flaxflow_namespace():
  mapping = dict(line.split("=") for line in _declared()["package_dir"].split("\n") if line)
  assert {name.strip(): folder.strip() for name, folder in mapping.items()} == {
      installed_as: top for top, installed_as in INSTALLED_AS.items() if top != installed_as}


@pytest.mark.slow
def test_the_default_run_trains_from_a_folder_holding_data_and_launch_folders(tmp_path):
  # A user's own folders, named as the repository's are: neither may stand in for the package's.
  for folder, content in (("data", "labels.csv"), ("launch", "notes.txt")):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / content).write_text("the user's\n")
  process = subprocess.run(
      [sys.executable, "-m", "flaxflow.launch.train", "--workdir=run", "--accelerator=cpu",
       f"--config.data_dir={tmp_path / 'tensorflow_datasets'}", "--config.num_steps=2",
       "--config.checkpoint_every=2", "--config.batch_size=16", "--config.model.levels=2",
       "--config.model.steps_per_level=1", "--config.model.width=8",
       "--config.eval_batch_size=640", "--config.samples_per_class=2"],
      cwd=tmp_path, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
  assert process.returncode == 0, process.stderr[-3000:]
  with open(tmp_path / "run" / "final_metrics.json") as file:
    final = json.load(file)
  assert final["step"] == 2 and all(math.isfinite(value) for value in final["eval"].values())
  assert sorted(os.listdir(tmp_path / "data")) == ["labels.csv"]

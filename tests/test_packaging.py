"""The installed package layout: data/ and launch/ install as flaxflow.data and flaxflow.launch."""

import configparser
import os

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

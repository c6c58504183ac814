"""End to end: the research entry points on a tiny synthetic-faces run report ground truth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data.synthetic_faces import factors, render
from launch import faces

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config (32x32 synthetic faces) shrunk to seconds.
TINY_FACES = ["--accelerator=cpu", "--config.batch_size=16", "--config.model.levels=2",
              "--config.model.steps_per_level=1", "--config.model.width=8",
              "--config.eval_batch_size=640", "--config.samples_per_class=2",
              "--config.num_steps=2", "--config.checkpoint_every=2", "--config.log_every=1"]


def run(module, *flags):
  process = subprocess.run([sys.executable, "-m", f"launch.{module}", *flags], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  return process.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("faces_run")
  run("train", f"--workdir={path}", f"--config.data_dir={path / 'data'}", *TINY_FACES)
  return path


@pytest.mark.slow
def test_transfer_reports_ground_truth_scores(workdir):
  stdout = run("transfer", f"--workdir={workdir}", "--accelerator=cpu", "--scored_per_class=1")
  assert "against ground truth, 7 inputs of test" in stdout
  assert "L1 of the untouched input (rows: source, columns: target)" in stdout
  with open(workdir / "analysis" / "transfer_ground_truth.json") as file:
    scores = json.load(file)
  assert scores["inputs"] == 7 and len(scores["class_names"]) == 7
  for key in ("l1", "ssim", "input_l1", "target_accuracy"):
    assert np.array(scores[key]).shape == (7, 7) and np.isfinite(scores[key]).all()
  np.testing.assert_array_equal(np.diag(scores["input_l1"]), 0)  # An input is its own truth.
  assert 0 < scores["mean_input_l1"] < 1 and 0 < scores["mean_l1"] < 1
  assert scores["classifier_accuracy_on_split"] > 0.5


@pytest.mark.slow
def test_tsne_prints_linear_probes_of_every_level(workdir):
  stdout = run("tsne", f"--workdir={workdir}", "--accelerator=cpu", "--perplexity=10",
               "--probe_subjects=3")
  assert "linear probes on 3 training subjects" in stdout
  with open(workdir / "analysis" / "probes.json") as file:
    rows = json.load(file)
  assert [row["level"] for row in rows] == [0, 1]
  assert all(0 <= row["expression_accuracy"] <= 1 and 0 <= row["subject_accuracy"] <= 1
             for row in rows)


def test_target_renders_redraw_each_input_with_its_own_class():
  drawn = factors.image_factors(0, range(4), images_per_subject=3)
  examples = {"image": render(*drawn.as_render_args(), 32), "label": drawn.expression,
              "identity": drawn.identity, "intensity": drawn.intensity,
              "nuisance": drawn.nuisance}
  renders = faces.target_renders(examples, len(factors.CLASS_NAMES))
  assert renders.shape == (12, 7, 32, 32, 1)
  np.testing.assert_array_equal(renders[np.arange(12), drawn.expression], examples["image"])
  other = (drawn.expression + 1) % 7
  assert (renders[np.arange(12), other] != examples["image"]).any(axis=(1, 2, 3)).all()


def test_first_per_class_takes_each_class_in_order():
  labels = np.array([3, 0, 3, 4, 0, 3])
  np.testing.assert_array_equal(faces.first_per_class(labels, 2), [1, 4, 0, 2, 3])
  with pytest.raises(ValueError, match="per_class=0"):
    faces.first_per_class(labels, 0)

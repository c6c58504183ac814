"""End to end: the research entry points on a tiny synthetic-faces run report ground truth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flaxflow.data.synthetic_faces import factors, render
from flaxflow.launch import faces
from flaxflow.launch.configs import default
from training_helpers import CHILD_TIMEOUT_S

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config (32x32 synthetic faces) shrunk to seconds.
TINY_FACES = ["--accelerator=cpu", "--config.batch_size=16", "--config.model.levels=2",
              "--config.model.steps_per_level=1", "--config.model.width=8",
              "--config.eval_batch_size=640", "--config.samples_per_class=2",
              "--config.num_steps=2", "--config.checkpoint_every=2", "--config.log_every=1"]


def run(module, *flags):
  process = subprocess.run([sys.executable, "-m", f"launch.{module}", *flags], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
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


# The DECGAN faces config shrunk to seconds.
TINY_DECGAN = ["--accelerator=cpu", "--config=launch/configs/decgan_faces.py",
               "--config.batch_size=8", "--config.model.encoder_widths=(4,8,8)",
               "--config.model.generator_widths=(8,8,4)",
               "--config.model.discriminator_widths=(4,4,8,8)", "--config.decgan.history_size=2",
               "--config.eval_batch_size=640", "--config.num_steps=2",
               "--config.checkpoint_every=2", "--config.log_every=1"]


@pytest.mark.slow
def test_decgan_trains_and_its_transfer_reports_identity_and_cycle(tmp_path):
  workdir = tmp_path / "decgan"
  run("train", f"--workdir={workdir}", *TINY_DECGAN, f"--config.data_dir={tmp_path / 'data'}")
  with open(workdir / "final_metrics.json") as file:
    assert set(json.load(file)["eval"]) == {"accuracy", "cycle_l1"}
  assert (workdir / "samples" / "step_0000002.png").exists()
  stdout = run("transfer", f"--workdir={workdir}", "--accelerator=cpu", "--scored_per_class=1",
               "--inputs=0,1")
  assert "against ground truth, 7 inputs of test (class_mean conditions)" in stdout
  assert "cycle reconstruction L1 (rows: source, columns: target)" in stdout
  with open(workdir / "analysis" / "transfer_ground_truth.json") as file:
    scores = json.load(file)
  for key in ("l1", "ssim", "input_l1", "target_accuracy", "identity_kept",
              "render_identity_kept", "cycle_l1", "e2_target_accuracy"):
    assert np.array(scores[key]).shape == (7, 7) and np.isfinite(scores[key]).all(), key
  # The renders are the people themselves: a fair subject classifier names most of them.
  assert scores["mean_render_identity_kept"] > 0.5
  assert 0 < scores["mean_cycle_l1"] < 1
  for figure in ("transfer.png", "transfer_by_example.png"):
    assert (workdir / "analysis" / figure).exists()


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


def test_the_ground_truth_is_drawn_from_the_build_the_run_trained_on():
  config = default.get_config()
  build = faces.builder_config(config)
  assert (build.image_size, build.min_intensity) == (32, config.dataset_options.min_intensity)
  new = faces.unseen_images_of_subjects(config, "train", num_subjects=2, per_subject=20)
  shown = new["label"] != factors.NEUTRAL
  assert new["image"].shape == (40, 32, 32, 1)
  assert np.all(new["intensity"][shown] > build.min_intensity)
  # A neutral input is scored at the middle of the build's intensities.
  assert faces.neutral_source_intensity(build.min_intensity) == pytest.approx(
      (1 + build.min_intensity) / 2)


def test_first_per_class_takes_each_class_in_order():
  labels = np.array([3, 0, 3, 4, 0, 3])
  np.testing.assert_array_equal(faces.first_per_class(labels, 2), [1, 4, 0, 2, 3])
  with pytest.raises(ValueError, match="per_class=0"):
    faces.first_per_class(labels, 0)

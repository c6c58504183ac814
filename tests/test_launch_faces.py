"""End to end: the research entry points on a tiny synthetic-faces run report ground truth."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from flaxflow import scoring, tasks
from flaxflow.analysis import generation
from flaxflow.data.synthetic_faces import factors
from flaxflow.launch import faces
from flaxflow.launch.configs import decgan_faces, default
from flaxflow.scoring import readers as readers_lib
from flaxflow.tasks import decgan as decgan_task
from flaxflow.tasks.trained import TrainedModel
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


def place_small_readers(config, data_dir) -> None:
  """Readers of the run's build fitted on 2 renders per class of each training person, where
  launch.transfer looks for them: the real ones take a minute or two to fit."""
  config.data_dir = str(data_dir)
  build = faces.scoring_build(config)
  readers = scoring.fit_readers(build, per_class=2)
  readers.save(readers_lib.cache_path(str(data_dir / "synthetic_faces_scoring"), build))


def check_transfer_metrics(path, condition_sets, n_bits) -> dict:
  """The transfer_metrics.json at `path`: every condition set's two columns with every figure."""
  with open(path) as file:
    scores = json.load(file)
  assert list(scores) == condition_sets
  for columns in scores.values():
    assert list(columns) == ["peak", "all_intensities"]
    for figures in columns.values():
      for key in ("target_accuracy", "identity_kept", "l1", "l1_noise_free", "l1_changed_pixels",
                  "l1_unchanged_pixels", "gap_closed", "checkerboard_ratio",
                  "ceiling_target_accuracy", "ceiling_identity_kept", "untouched_l1"):
        assert np.isfinite(figures[key]), key
      assert len(figures["target_accuracy_per_class"]) == 7
      assert figures["num_transfers"] == 20 * 7 * 6 and figures["intensity"] == 0.85
      assert figures["n_bits"] == n_bits and figures["ceiling_identity_kept"] >= 0.9
      assert 0 < figures["untouched_l1"] < 1
  return scores


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("faces_run")
  run("train", f"--workdir={path}", f"--config.data_dir={path / 'data'}", *TINY_FACES)
  return path


@pytest.mark.slow
def test_transfer_scores_every_flow_on_the_scoring_protocol(workdir):
  place_small_readers(default.get_config(), workdir / "data")
  stdout = run("transfer", f"--workdir={workdir}", "--accelerator=cpu")
  assert "840 transfers of 140 test inputs (20 people) per column" in stdout
  assert "class_mean_shift" in stdout.splitlines()[-5]
  check_transfer_metrics(workdir / "analysis" / "transfer_metrics.json", ["class_mean_shift"], 5)
  for figure in ("transfer.png", "interpolation.png"):
    assert (workdir / "analysis" / figure).exists()


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
def test_decgan_trains_and_its_transfer_is_scored_with_e2_beside_the_readers(tmp_path):
  workdir = tmp_path / "decgan"
  run("train", f"--workdir={workdir}", *TINY_DECGAN, f"--config.data_dir={tmp_path / 'data'}")
  with open(workdir / "final_metrics.json") as file:
    # E2's accuracy and the cycle, and the transfer scored against ground truth while it trains.
    assert set(json.load(file)["eval"]) == {"accuracy", "cycle_l1", *(
        f"transfer/{name}" for name in decgan_task.TRANSFER_FIGURES)}
  assert (workdir / "samples" / "step_0000002.png").exists()
  place_small_readers(decgan_faces.get_config(), tmp_path / "data")
  run("transfer", f"--workdir={workdir}", "--accelerator=cpu", "--inputs=0,1")
  scores = check_transfer_metrics(workdir / "analysis" / "transfer_metrics.json",
                                  ["one_hot", "class_mean"], 8)
  for columns in scores.values():
    for figures in columns.values():
      assert 0 <= figures["own_classifier_target_accuracy"] <= 1
  for figure in ("transfer.png", "transfer_class_mean.png", "transfer_by_example.png"):
    assert (workdir / "analysis" / figure).exists()


def test_the_scored_people_are_those_of_the_build_the_run_trained_on():
  config = default.get_config()
  build = faces.scoring_build(config)
  assert (build.image_size, build.min_intensity) == (32, config.dataset_options.min_intensity)
  assert build.people("test") == faces.builder_config(config).subject_numbers("test")
  # A build of every intensity has the same people: their readers are the same file.
  every_intensity = decgan_faces.get_config()
  every_intensity.dataset_options.min_intensity = 0.0
  other = faces.scoring_build(every_intensity)
  assert other.min_intensity == 0 and other.key() == build.key()
  new = faces.unseen_images_of_subjects(config, "train", num_subjects=2, per_subject=20)
  shown = new["label"] != factors.NEUTRAL
  assert new["image"].shape == (40, 32, 32, 1)
  assert np.all(new["intensity"][shown] > build.min_intensity)


def test_first_per_class_takes_each_class_in_order():
  labels = np.array([3, 0, 3, 4, 0, 3])
  np.testing.assert_array_equal(faces.first_per_class(labels, 2), [1, 4, 0, 2, 3])
  with pytest.raises(ValueError, match="per_class=0"):
    faces.first_per_class(labels, 0)


def test_runs_that_do_not_transfer_and_flow_settings_for_decgan_are_refused():
  run_of = lambda name: TrainedModel(ml_collections.ConfigDict({"model": {"name": name}}), None,
                                     None, 0)
  with pytest.raises(ValueError, match="a run of cnn does not transfer expressions"):
    tasks.transfer_methods(run_of("cnn"), None, factors.CLASS_NAMES, generation.LatentShift())
  with pytest.raises(ValueError, match="--strength, --zero_deepest and --true_source_labels"):
    tasks.transfer_methods(run_of("decgan"), None, factors.CLASS_NAMES,
                           generation.LatentShift(strength=0.5))

"""End-to-end tests of the research entry points on a tiny digits run trained in the test."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from flaxflow.launch import runs
from flaxflow.launch.configs import digits_bplf
from flaxflow.workdir import Workdir
from training_helpers import CHILD_TIMEOUT_S

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A config shrunk to seconds, as the training entry point's tests shrink it.
TINY = ["--accelerator=cpu", "--config.batch_size=16", "--config.model.steps_per_level=1",
        "--config.model.width=8", "--config.log_every=1", "--config.eval_batch_size=120",
        "--config.samples_per_class=3"]
CLASSIFIER_CONFIG = os.path.join(REPO_ROOT, "launch", "configs", "digits_classifier.py")
DIGITS_CONFIG = os.path.join(REPO_ROOT, "launch", "configs", "digits_bplf.py")
CNN_CONFIG = os.path.join(REPO_ROOT, "launch", "configs", "digits_cnn.py")


def run(module, *flags, expect_success=True):
  process = subprocess.run([sys.executable, "-m", f"launch.{module}", *flags], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
  if expect_success:
    assert process.returncode == 0, process.stderr[-3000:]
  return process


def read_json(path):
  with open(path) as file:
    return json.load(file)


def png_size(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    return image.size


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A class-conditional BPLF trained for 4 steps on digits by launch.train."""
  path = tmp_path_factory.mktemp("run")
  run("train", f"--workdir={path}", f"--config={DIGITS_CONFIG}", *TINY, "--config.num_steps=4",
      "--config.checkpoint_every=4")
  return path


@pytest.mark.slow
def test_evaluate_writes_likelihoods_accuracy_and_a_confusion_matrix(workdir):
  stdout = run("evaluate", f"--workdir={workdir}", "--accelerator=cpu").stdout
  report = read_json(workdir / "analysis" / "evaluation.json")
  assert report["step"] == 4 and report["num_examples"] == 360 and report["split"] == "test"
  trained = read_json(workdir / "final_metrics.json")["eval"]
  for name in ("bits_per_dim", "bits_per_dim_given_label"):  # Marginal and given the label.
    assert abs(report[name] - trained[name]) < 0.05  # Other dequantisation noise, same model.
  assert "bits_per_dim_given_label:" in stdout and 0 <= report["accuracy"] <= 1
  matrix = np.array(report["confusion_matrix"])
  assert matrix.shape == (10, 10) and matrix.sum() == 360
  assert report["accuracy"] == pytest.approx(np.trace(matrix) / 360)
  assert "accuracy:" in stdout and "confusion matrix" in stdout
  png_size(workdir / "analysis" / "confusion_matrix.png")


@pytest.mark.slow
def test_sample_writes_class_and_unconditional_grids_per_temperature(workdir):
  run("sample", f"--workdir={workdir}", "--accelerator=cpu", "--temperatures=0.5,1",
      "--samples_per_class=4", "--unconditional_grid=2,5")
  folder = workdir / "analysis" / "samples"
  assert sorted(os.listdir(folder)) == ["classes_T0.50.png", "classes_T1.00.png",
                                        "unconditional_T0.50.png", "unconditional_T1.00.png"]
  class_width, class_height = png_size(folder / "classes_T0.50.png")
  free_width, free_height = png_size(folder / "unconditional_T1.00.png")
  assert class_height == pytest.approx(5 * free_height, rel=0.1)  # 10 rows against 2.
  assert class_width < free_width  # 4 columns and the labels, against 5 columns.


@pytest.mark.slow
def test_transfer_and_interpolation_figures(workdir):
  stdout = run("transfer", f"--workdir={workdir}", "--accelerator=cpu", "--inputs=0,1,2",
               "--pairs=0:1,2:3", "--interpolation_points=4", "--zero_deepest").stdout
  assert "transfer.png" in stdout and "interpolation.png" in stdout
  transfer_width, transfer_height = png_size(workdir / "analysis" / "transfer.png")
  assert transfer_width > 2 * transfer_height  # 3 inputs by 1 + 10 columns.
  png_size(workdir / "analysis" / "interpolation.png")
  bad = run("transfer", f"--workdir={workdir}", "--accelerator=cpu", "--inputs=360",
            expect_success=False)
  assert bad.returncode != 0 and "--inputs=360: expected indices in [0, 360)" in bad.stderr


@pytest.mark.slow
def test_tsne_of_the_deepest_latent(workdir):
  stdout = run("tsne", f"--workdir={workdir}", "--accelerator=cpu", "--perplexity=10").stdout
  assert "digits names no subjects" in stdout
  png_size(workdir / "analysis" / "tsne_level-1.png")


@pytest.mark.slow
def test_cross_validation_reports_mean_and_std_over_folds(tmp_path):
  stdout = run("cross_validate", f"--config={CLASSIFIER_CONFIG}", f"--workdir={tmp_path}",
               "--folds=2", *TINY, "--config.num_steps=2", "--config.checkpoint_every=2").stdout
  summary = read_json(tmp_path / "cross_validation.json")
  assert summary["folds"] == 2 and len(summary["fold_accuracies"]) == 2
  assert summary["accuracy_mean"] == pytest.approx(np.mean(summary["fold_accuracies"]), abs=1e-6)
  assert np.array(summary["confusion_matrix"]).sum() == 1797  # Every digit tested once.
  assert "class-stratified" in summary["scheme"] and "2-fold accuracy" in stdout
  assert summary["protocol"] == "subject_disjoint" and "protocol subject_disjoint" in stdout
  for fold in (0, 1):
    assert read_json(tmp_path / f"fold_{fold}" / "evaluation.json")["fold"] == fold
  png_size(tmp_path / "confusion_matrix.png")


@pytest.mark.slow
def test_table1_rows_of_the_flow_the_sklearn_classifiers_and_the_cnn(workdir, tmp_path):
  cnn = tmp_path / "cnn"
  run("train", f"--workdir={cnn}", f"--config={CNN_CONFIG}", "--accelerator=cpu",
      "--config.num_steps=4", "--config.checkpoint_every=4", "--config.batch_size=16",
      "--config.model.widths=(4, 8)", "--config.model.dense_width=8",
      "--config.eval_batch_size=120")
  stdout = run("table1", f"--workdir={workdir}", "--accelerator=cpu", "--max_train=150",
               "--perplexity=10", f"--cnn_workdir={cnn}", f"--output_dir={tmp_path}").stdout
  summary = read_json(tmp_path / "table1.json")
  rows = summary["rows"]
  assert summary["labels"] == "predicted" and summary["train_examples"] == 150
  assert [row["data"] for row in rows] == ["z (latent)"] + ["t-SNE embeddings"] * 4 + [
      "z (latent)"] * 4 + ["images"]
  assert all(0 <= row["accuracy"] <= 1 for row in rows)
  assert rows[-1]["accuracy"] == read_json(cnn / "final_metrics.json")["eval"]["accuracy"]
  assert "| t-SNE embeddings | Random Forest |" in stdout
  assert (tmp_path / "table1.md").read_text().startswith("digits: fitted on 150 training images")


@pytest.mark.slow
def test_ablation_table_and_rerun_reads_finished_rows_back(tmp_path):
  flags = [f"--workdir={tmp_path}", "--rows=glow,bplf_3x3_svd", *TINY, "--config.num_steps=2",
           "--config.checkpoint_every=2", "--config.eval_every=1"]
  run("ablate", *flags)
  table = (tmp_path / "ablation.md").read_text()
  assert "Command: `python -m launch.ablate --workdir=" in table
  assert "| Glow |" in table and "| BPLF 3×3 conv with SVD |" in table
  assert "2 steps of batch 16" in table
  row = read_json(tmp_path / "bplf_3x3_svd" / "ablation_row.json")
  assert row["model"]["svd_rank"] == 4 and "raw_bits_per_dim" in row
  rerun = run("ablate", *flags)
  assert "step 1/2" not in rerun.stderr  # Nothing trained again.
  assert (tmp_path / "ablation.md").read_text() == table
  # Fig. 7 from the rows' TensorBoard logs: the test bits/dim of steps 1 and 2.
  curves = run("plot_curves", f"--workdir={tmp_path}", "--smoothing=0").stdout
  assert "Glow: eval/bits_per_dim at 2 steps, last" in curves
  last = float(curves.split("Glow: eval/bits_per_dim at 2 steps, last ")[1].split()[0])
  assert last == pytest.approx(read_json(tmp_path / "glow" / "ablation_row.json")[
      "bits_per_dim"], abs=0.05)  # The final evaluation, with other dequantisation noise.
  assert png_size(tmp_path / "nll_curves.png")[0] > 300


def empty_folder(path):
  return (f"error: workdir {path}: no config.json; train into it first with python -m "
          f"flaxflow.launch.train --workdir {path}")


def folder_of_other_files(path):
  (path / "notes.txt").write_text("not a run")
  return empty_folder(path)


def run_stopped_before_its_first_checkpoint(path):
  Workdir(str(path)).write_config(digits_bplf.get_config())
  (path / "checkpoints").mkdir()
  return f"error: no complete checkpoint in {path / 'checkpoints'}"


@pytest.mark.parametrize("module, make_workdir", [
    ("evaluate", empty_folder), ("sample", empty_folder), ("transfer", folder_of_other_files),
    ("tsne", run_stopped_before_its_first_checkpoint)])
def test_a_workdir_without_a_run_is_one_line_exit_2_and_left_as_it_was(tmp_path, module,
                                                                       make_workdir):
  message = make_workdir(tmp_path)
  before = sorted(os.listdir(tmp_path))
  process = run(module, f"--workdir={tmp_path}", "--accelerator=cpu", expect_success=False)
  assert process.returncode == runs.EXIT_USER_ERROR and "Traceback" not in process.stderr
  assert process.stderr.rstrip().splitlines()[-1] == message
  assert sorted(os.listdir(tmp_path)) == before

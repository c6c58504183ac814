"""The BU-EEG-style source: RGB face crops of 6 classes in <label>/<subject>_*.png folders, and
the models and research tools on its 3 channels and 6 classes."""

import cv2
import jax
import numpy as np
import pytest

from flaxflow.data import datasets
from flaxflow import analysis, models, objectives

# BU-EEG's six expressions as its folders might name them: no neutral.
FOLDERS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
SUBJECTS = ("S01", "S02", "S03", "S04", "S05")


@pytest.fixture(scope="module")
def bu_eeg_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("bu_eeg")
  rng = np.random.default_rng(0)
  for label, folder in enumerate(FOLDERS):
    (root / folder).mkdir()
    for subject in SUBJECTS:
      for take in range(2):
        rgb = rng.integers(0, 40, (12, 10, 3)).astype(np.uint8)
        rgb[..., 0] += np.uint8(40 * label)  # Red rises with the class: checks the channel order.
        cv2.imwrite(str(root / folder / f"{subject}_{take:04d}.png"), rgb[..., ::-1])
  return root


def load_all(root, size=8):
  parts = {}
  for split in ("train", "test"):
    dataset, info = datasets.load(f"face_folders/{size}", split, data_dir=str(root))
    batch = next(iter(dataset.batch(1000).as_numpy_iterator()))
    parts[split] = {"image": batch["image"], "label": batch["label"],
                    "subject": np.array([subject.decode() for subject in batch["subject"]])}
  return parts, info


def test_six_rgb_classes_without_an_empty_seventh_and_subject_disjoint_splits(bu_eeg_dir):
  parts, info = load_all(bu_eeg_dir)
  assert info.class_names == ("anger", "disgust", "fear", "happy", "sad", "surprise")
  assert info.image_shape == (8, 8, 3)
  assert info.num_examples == {"train": 48, "test": 12}  # 1 of 5 subjects held out.
  train, test = parts["train"], parts["test"]
  assert not set(train["subject"]) & set(test["subject"])
  assert set(np.unique(train["label"])) == set(range(6))
  red = [train["image"][train["label"] == label][..., 0].mean() for label in range(6)]
  assert np.all(np.diff(red) > 20)  # Red, not blue, carries the class.


def test_layout_problems_and_bad_names_are_one_line_errors(bu_eeg_dir, tmp_path):
  (tmp_path / "boredom").mkdir()
  with pytest.raises(ValueError, match="1 problem.*boredom"):
    datasets.load("face_folders/8", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="face_folders/<image size>"):
    datasets.load("face_folders", "train", data_dir=str(bu_eeg_dir))
  with pytest.raises(ValueError, match="data_dir"):
    datasets.load("face_folders/8", "train")


def test_models_and_research_tools_take_three_channels_and_six_classes(bu_eeg_dir):
  parts, info = load_all(bu_eeg_dir)
  train, test = parts["train"], parts["test"]
  model = models.create({"name": "classifier", "image_shape": info.image_shape,
                         "num_classes": len(info.class_names), "levels": 2, "steps_per_level": 1,
                         "width": 8, "h_steps": 1, "h_width": 8})
  n_bits = 5
  variables = jax.jit(lambda rng: model.init(rng, objectives.dequantize(
      None, train["image"][:8], n_bits), method="class_logits"))(jax.random.PRNGKey(0))
  report = analysis.evaluate(model, variables, analysis.array_batches(test, 6), n_bits=n_bits,
                             class_names=info.class_names)
  assert np.array(report["confusion_matrix"]).shape == (6, 6) and report["num_examples"] == 12
  latents = analysis.latent_features(model, variables, analysis.array_batches(test, 6),
                                     n_bits=n_bits)
  assert latents["features"].shape == (12, 2 * 2 * 3 * 8) and latents["prediction"].max() < 6
  sums = analysis.class_latent_sums(model, variables, analysis.array_batches(train, 8),
                                    num_classes=6, n_bits=n_bits)
  moved = analysis.transfer_expressions(model, variables, test["image"][:2], test["label"][:2],
                                        sums.expression_shifts(), n_bits=n_bits,
                                        zero_deepest=True)
  assert moved.shape == (2, 6, 8, 8, 3) and moved.dtype == np.uint8

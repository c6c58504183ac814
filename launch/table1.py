"""The classifier paper's Table I on a trained run: `python -m launch.table1 --workdir W`.

W is a class-conditional flow (the conditional-Glow classifier, or class-conditional Glow/BPLF).
Its Bayes'-rule accuracy on the test split (--split) is the first row; then scikit-learn's random
forest, extra trees, AdaBoost and decision tree, each fitted on the latent (--level, default the
deepest: z1' = h(z1, ŷ) for the classifier, ŷ its own prediction; --labels as in launch.tsne) of
up to --max_train training images and scored on every test image, once on the 2-D t-SNE embedding
(training and test latents embedded together) and once on the raw latents. With --cnn_workdir, the
test accuracy of a CNN baseline run (`launch/configs/digits_cnn.py`) as one more row. Writes
W/analysis/table1.json and table1.md.
"""

import numpy as np
from absl import app, flags

from flaxflow import analysis
from flaxflow.analysis import latent_classifiers
from flaxflow.workdir import Workdir
from flaxflow.launch import research, runs

_RUN = research.define_run_flags()

_SPLIT = flags.DEFINE_string("split", None, "Test split (default: the run's eval_split).")
_LATENT = research.define_latent_flags()
_MAX_TRAIN = flags.DEFINE_integer("max_train", 2000, "Training images the classifiers are fitted "
                                  "on (a seeded random subset; t-SNE time grows with it).")
_PERPLEXITY = flags.DEFINE_float("perplexity", 30.0, "t-SNE perplexity.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the subset, t-SNE and the classifiers.")
_CNN_WORKDIR = flags.DEFINE_string("cnn_workdir", None, "A finished CNN baseline run on the same "
                                   "dataset: its test accuracy becomes one more row.")


def cnn_row(cnn_workdir: str, dataset: str, split: str) -> dict:
  """The CNN run's final test accuracy, checked to be of the same data."""
  run = Workdir(cnn_workdir)
  config = run.read_config()
  if config.dataset != dataset or config.eval_split != split:
    raise ValueError(f"--cnn_workdir={cnn_workdir}: a run on {config.dataset} "
                     f"{config.eval_split}, not {dataset} {split}")
  accuracy = run.read_final_metrics()["eval"]["accuracy"]
  return {"data": "images", "classifier": f"CNN ({cnn_workdir})", "accuracy": accuracy}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  run, split, test_batches, info = research.start_on_split(_RUN, _SPLIT)
  if not run.model.is_class_conditional:
    raise ValueError(f"--workdir={research.WORKDIR.value}: {type(run.model).__name__} with "
                     "num_classes=0 does not classify")
  config = run.config
  train, _ = research.split_examples(config, "train")
  keep = np.sort(np.random.default_rng(_SEED.value).permutation(len(train["label"]))[
      :_MAX_TRAIN.value])
  level, labels = _LATENT.level.value, _LATENT.labels.value
  features = lambda batches: analysis.latent_features(
      run.model, run.variables, batches, level=level, labels=labels, n_bits=config.n_bits)
  train_latents = features(analysis.array_batches({key: values[keep] for key, values
                                                   in train.items()}, config.eval_batch_size))
  test_latents = features(test_batches())
  test_labels = test_latents["label"]
  flow_accuracy = float(np.mean(test_latents["prediction"] == test_labels))
  latent_accuracies = latent_classifiers.classifier_accuracies(
      train_latents["features"], train_latents["label"], test_latents["features"], test_labels,
      _SEED.value)
  train_2d, test_2d = latent_classifiers.joint_tsne(
      train_latents["features"], test_latents["features"], perplexity=_PERPLEXITY.value,
      seed=_SEED.value)
  tsne_accuracies = latent_classifiers.classifier_accuracies(
      train_2d, train_latents["label"], test_2d, test_labels, _SEED.value)
  rows = latent_classifiers.table_rows(latent_accuracies, tsne_accuracies, flow_accuracy,
                                       f"{type(run.model).__name__} (Bayes' rule)")
  if _CNN_WORKDIR.value:
    rows.append(cnn_row(_CNN_WORKDIR.value, config.dataset, split))
  setting = (f"{config.dataset}: fitted on {len(keep)} training images, tested on "
             f"{len(test_labels)} {split} images; latent {level} "
             f"({train_latents['features'].shape[1]} dimensions) encoded with "
             f"{labels} labels{' (LEAKS the test labels)' if labels == 'true' else ''}"
             f"; t-SNE of training and test latents together, perplexity {_PERPLEXITY.value:g}; "
             f"step {run.step}")
  table = latent_classifiers.markdown_table(rows)
  print(f"{setting}\n\n{table}")
  with open(research.output_path(_RUN, "table1.md"), "w") as file:
    file.write(f"{setting}\n\n{table}\n")
  summary = {"setting": setting, "split": split, "labels": labels, "level": level,
             "train_examples": int(len(keep)), "rows": rows}
  print(f"wrote {research.write_json(research.output_path(_RUN, 'table1.json'), summary)}")


if __name__ == "__main__":
  runs.run_main(main)

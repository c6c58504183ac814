"""k-fold cross-validated recognition accuracy of a class-conditional flow or of IF-GAN.

    python -m launch.cross_validate --config=launch/configs/digits_classifier.py --workdir=W \
        --folds=10

Pools every split of the config's dataset, draws folds by --protocol: subject_disjoint (the
default; class-stratified where the dataset names no subjects), uniform (subject-dependent, the
classifier paper's 10-fold protocol) or leave_one_subject_out (one fold per subject); the output
and the JSON say which. Trains the config from scratch on each
fold's training part into W/fold_<k> (rerunning resumes) and evaluates it on the held-out part.
Writes W/cross_validation.json (per-fold and mean ± std accuracy) and W/confusion_matrix.png (the
folds' confusion matrices summed: every example is tested once).
"""

import os

import jax
import numpy as np
from absl import app, flags

from flaxflow import analysis, tasks
from flaxflow.launch import research, runs

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                               "digits_classifier.py")
_CONFIG = runs.define_config_flag(_DEFAULT_CONFIG, "Training config file.")
_FOLDS = flags.DEFINE_integer("folds", 10, "Number of folds.")
_FOLD_SEED = flags.DEFINE_integer("fold_seed", 0, "Seed of the fold assignment.")
_PROTOCOL = flags.DEFINE_enum("protocol", "subject_disjoint", list(analysis.PROTOCOLS),
                              "How folds are drawn: subject_disjoint (no subject in both parts; "
                              "plain stratified folds where the data name no subjects), uniform "
                              "(stratified over all examples, subject-dependent), "
                              "leave_one_subject_out (one fold per subject; --folds unused).")


def pooled_examples(config) -> tuple:
  """Every example of every split of the config's dataset, and the dataset's info."""
  _, info = research.split_batches(config, config.eval_split)
  parts = [research.split_examples(config, split)[0] for split in sorted(info.num_examples)]
  return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}, info


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config, workdir = runs.config_from_flag(_CONFIG), os.path.abspath(research.WORKDIR.value)
  runs.start_devices()
  model = tasks.create_model(config)
  if not model.is_class_conditional:
    raise app.UsageError(f"--config: {config.model.name} with num_classes=0 does not classify")
  examples, info = pooled_examples(config)
  folds = analysis.make_folds(examples["label"], examples["subject"], _FOLDS.value,
                              _FOLD_SEED.value, _PROTOCOL.value)
  print(f"{config.dataset}: {len(examples['label'])} examples, protocol {_PROTOCOL.value}, "
        f"{len(folds.folds)} folds: {folds.scheme}")
  accuracies, matrices = [], []
  for index, (train, test) in enumerate(folds.folds):
    fold_dir = os.path.join(workdir, f"fold_{index}")
    part = lambda rows: {key: values[rows] for key, values in examples.items()}
    research.train_on_examples(config, part(train), fold_dir, info.class_names)
    run = tasks.load_trained(fold_dir)
    report = analysis.evaluate(run.model, run.variables,
                               analysis.array_batches(part(test), config.eval_batch_size),
                               n_bits=config.n_bits, class_names=info.class_names,
                               rng=jax.random.PRNGKey(config.seed))
    research.write_json(os.path.join(fold_dir, "evaluation.json"),
                        {"fold": index, "train_examples": len(train), **report})
    accuracies.append(report["accuracy"])
    matrices.append(np.asarray(report["confusion_matrix"]))
    print(f"fold {index}: {len(train)} training, {len(test)} test examples, accuracy "
          f"{100 * report['accuracy']:.2f}%")
  summary = analysis.summarize(accuracies)
  total = np.sum(matrices, axis=0)
  line = (f"{len(folds.folds)}-fold accuracy: {100 * summary['mean']:.2f} ± "
          f"{100 * summary['std']:.2f}%")
  print(f"{line} (protocol {_PROTOCOL.value}: {folds.scheme})")
  research.write_json(os.path.join(workdir, "cross_validation.json"), {
      "dataset": config.dataset, "model": config.model.name, "folds": len(folds.folds),
      "protocol": _PROTOCOL.value, "scheme": folds.scheme, "num_steps": config.num_steps,
      "batch_size": config.batch_size,
      "accuracy_mean": summary["mean"], "accuracy_std": summary["std"],
      "fold_accuracies": summary["folds"], "class_names": list(info.class_names),
      "confusion_matrix": total.tolist()})
  analysis.save_confusion_matrix(os.path.join(workdir, "confusion_matrix.png"), total,
                                 info.class_names, f"{line}\n{folds.scheme}")
  print(f"wrote {os.path.join(workdir, 'cross_validation.json')} and confusion_matrix.png")


if __name__ == "__main__":
  runs.run_main(main)

"""Evaluates a trained run: `python -m launch.evaluate --workdir W`.

Bits/dim and mean log-likelihood on the test split, each named for what it is: of p(x) (the
marginal, for class-conditional models) and of p(x | y_true) ("_given_label"); SVD models: of the
truncated data and ("raw_") of the raw images; none for IF-GAN, which has no likelihood. And for
class-conditional models the recognition accuracy with a confusion matrix (printed and as PNG).
Writes W/analysis/evaluation.json and W/analysis/confusion_matrix.png.
"""

import jax
import numpy as np
from absl import app, flags, logging

from flaxflow import analysis, optimization
from flaxflow.launch import research, runs

_RUN = research.define_run_flags()

_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval_split).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the uniform dequantisation noise.")


def format_report(report: dict) -> str:
  likelihoods = [f"{raw}{name}{given}" for given in ("", "_given_label") for raw in ("", "raw_")
                 for name in ("bits_per_dim", "log_likelihood_nats")]
  lines = [f"{name}: {report[name]:.4f}" for name in (*likelihoods, "accuracy") if name in report]
  if "confusion_matrix" in report:
    names = report["class_names"]
    width = max(5, *(len(name) for name in names))
    lines.append("confusion matrix (rows: true class, columns: predicted class):")
    lines.append(" " * width + "".join(f"{name:>{width + 1}}" for name in names))
    for name, row in zip(names, np.asarray(report["confusion_matrix"])):
      lines.append(f"{name:>{width}}" + "".join(f"{count:>{width + 1}d}" for count in row))
  return "\n".join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  run, split, batches, info = research.start_on_split(_RUN, _SPLIT)
  if not bool(optimization.tree_is_finite(run.variables)):
    logging.warning("the parameters of step %d in %s are not all finite: the metrics below are "
                    "meaningless", run.step, research.WORKDIR.value)
  report = analysis.evaluate(run.model, run.variables, batches(), n_bits=run.config.n_bits,
                             class_names=info.class_names, rng=jax.random.PRNGKey(_SEED.value))
  report = {"workdir": research.WORKDIR.value, "step": run.step, "dataset": run.config.dataset,
            "split": split, "n_bits": run.config.n_bits, "use_ema": _RUN.use_ema.value,
            **report}
  print(f"{run.config.dataset} {split}, step {run.step}, {report['num_examples']} examples")
  print(format_report(report))
  if "confusion_matrix" in report:
    path = analysis.save_confusion_matrix(
        research.output_path(_RUN, "confusion_matrix.png"), report["confusion_matrix"],
        info.class_names, f"{run.config.dataset} {split}, step {run.step}: accuracy "
        f"{100 * report['accuracy']:.2f}%")
    print(f"wrote {path}")
  print(f"wrote {research.write_json(research.output_path(_RUN, 'evaluation.json'), report)}")


if __name__ == "__main__":
  runs.run_main(main)

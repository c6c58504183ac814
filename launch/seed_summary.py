"""Test accuracy over seeds of runs named <variant>_seed<S> in one folder (launch/ifgan_seeds.sh
leaves them so): `python -m launch.seed_summary --runs=ROOT`.

Reads each run's final_metrics.json (unfinished runs have none and are left out) and prints, per
variant, the mean ± std (over the seeds, ddof=0) and every seed's accuracy; writes
ROOT/seed_summary.json.
"""

import glob
import json
import os
import re

from absl import app, flags

from flaxflow import analysis
from flaxflow.launch import runs

_RUNS = flags.DEFINE_string("runs", None, "Folder of the runs.", required=True)


def accuracy_summary(root: str) -> dict:
  """{variant: `analysis.summarize` of the test accuracies over the seeds, with "seeds"}."""
  accuracies = {}
  for path in sorted(glob.glob(os.path.join(root, "*_seed*", "final_metrics.json"))):
    variant, seed = re.fullmatch(r"(.+)_seed(\d+)", os.path.basename(os.path.dirname(path))
                                 ).groups()
    with open(path) as file:
      accuracies.setdefault(variant, {})[int(seed)] = json.load(file)["eval"]["accuracy"]
  if not accuracies:
    raise FileNotFoundError(f"--runs={root}: no finished <variant>_seed<S> runs")
  return {variant: {"seeds": sorted(by_seed), **analysis.summarize(
      [by_seed[seed] for seed in sorted(by_seed)])} for variant, by_seed in accuracies.items()}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  summary = accuracy_summary(_RUNS.value)
  for variant, scores in summary.items():
    print(f"{variant}: test accuracy {100 * scores['mean']:.2f} ± {100 * scores['std']:.2f}% "
          f"over seeds {scores['seeds']} ({', '.join(f'{100 * a:.2f}' for a in scores['folds'])})")
  path = os.path.join(_RUNS.value, "seed_summary.json")
  with open(path, "w") as file:
    json.dump(summary, file, indent=2)
  print(f"wrote {path}")


if __name__ == "__main__":
  runs.run_main(main)

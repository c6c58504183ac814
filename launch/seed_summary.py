"""Metrics over seeds of runs named <variant>_seed<S> in one folder (launch/ifgan_seeds.sh leaves
them so), and each variant against a baseline variant on the same test images:

    python -m launch.seed_summary --runs=ROOT [--baseline=baseline]

Reads each run's final_metrics.json (unfinished runs have none and are left out) and prints, per
variant, the mean ± std (over the seeds, ddof=0) of the test split's accuracy and, for
synthetic-faces runs, of every ground-truth metric at peak frames and at all intensities. Then,
where the folder holds the --baseline variant, McNemar's test of each other variant against it
on the same test images, per regime: for each seed both share, and for the seeds' majority vote
(an image counts as right for a variant when most of its seeds get it right). Writes
ROOT/seed_summary.json.
"""

import collections
import glob
import json
import os
import re
from typing import Dict

import numpy as np
from absl import app, flags

from flaxflow import analysis, scoring, tasks
from flaxflow.analysis import ifgan_ground_truth as truth_lib
from flaxflow.tasks import ifgan as ifgan_task
from flaxflow.workdir import Workdir
from flaxflow.launch import faces, runs

_RUNS = flags.DEFINE_string("runs", None, "Folder of the runs.", required=True)
_BASELINE = flags.DEFINE_string("baseline", "baseline",
                                "The variant every other is tested against (McNemar).")


def finished_runs(root: str) -> Dict[str, Dict[int, Workdir]]:
  """{variant: {seed: workdir}} of the runs under `root` with final metrics."""
  found = collections.defaultdict(dict)
  for path in sorted(glob.glob(os.path.join(root, "*_seed*"))):
    match = re.fullmatch(r"(.+)_seed(\d+)", os.path.basename(path))
    run = Workdir(path)
    if match and os.path.exists(run.final_metrics_file):
      found[match.group(1)][int(match.group(2))] = run
  if not found:
    raise FileNotFoundError(f"--runs={root}: no finished <variant>_seed<S> runs")
  return dict(found)


def metric_summary(runs_by_seed: Dict[int, Workdir]) -> dict:
  """`analysis.summarize` over the seeds of the split's accuracy ("accuracy") and of every
  number in each ground-truth regime ("<regime>": {metric: summary})."""
  evals = [runs_by_seed[seed].read_final_metrics()["eval"] for seed in sorted(runs_by_seed)]
  summary = {"seeds": sorted(runs_by_seed),
             "accuracy": analysis.summarize([metrics["accuracy"] for metrics in evals])}
  for regime in scoring.COLUMNS:
    if all(regime in metrics for metrics in evals):
      summary[regime] = {name: analysis.summarize([metrics[regime][name] for metrics in evals])
                         for name in evals[0][regime]}
  return summary


def correct_predictions(run: Workdir,
                        sets: Dict[str, truth_lib.FaceSet]) -> Dict[str, np.ndarray]:
  """{regime: bool (N,)}: whether the run's prediction on each test image is right."""
  trained = tasks.load_trained(run.path)
  inference = ifgan_task.Inference(trained.model, trained.config.eval_batch_size)
  return {regime: inference.predictions(trained.variables, faces_set.image) == faces_set.label
          for regime, faces_set in sets.items()}


def paired_tests(found: Dict[str, Dict[int, Workdir]], baseline: str) -> dict:
  """{variant: {regime: {"per_seed": {seed: mcnemar}, "majority": mcnemar}}} of every variant
  against `baseline` (first: the variant, second: the baseline)."""
  some_run = next(iter(found[baseline].values()))
  config = some_run.read_config()
  sets = truth_lib.face_sets(faces.scoring_build(config), config.eval_split)
  correct = {variant: {seed: correct_predictions(run, sets) for seed, run in by_seed.items()}
             for variant, by_seed in found.items()}
  majority = lambda by_seed, regime: np.mean([value[regime] for value in by_seed.values()],
                                             axis=0) > 0.5
  tests = {}
  for variant, by_seed in correct.items():
    if variant == baseline:
      continue
    tests[variant] = {regime: {
        "per_seed": {seed: truth_lib.mcnemar(by_seed[seed][regime],
                                             correct[baseline][seed][regime])
                     for seed in sorted(set(by_seed) & set(correct[baseline]))},
        "majority": truth_lib.mcnemar(majority(by_seed, regime),
                                      majority(correct[baseline], regime))}
        for regime in sets}
  return tests


def _percent(summary: dict) -> str:
  return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}%"


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  found = finished_runs(_RUNS.value)
  summary = {"variants": {variant: metric_summary(by_seed) for variant, by_seed in found.items()}}
  for variant, scores in summary["variants"].items():
    line = f"{variant} (seeds {scores['seeds']}): split accuracy {_percent(scores['accuracy'])}"
    for regime in scoring.COLUMNS:
      if regime in scores:
        line += f"; {regime} accuracy {_percent(scores[regime]['accuracy'])}"
    print(line)
  if _BASELINE.value in found and all(regime in summary["variants"][_BASELINE.value]
                                      for regime in scoring.COLUMNS):
    summary["against_" + _BASELINE.value] = paired_tests(found, _BASELINE.value)
    for variant, regimes in summary["against_" + _BASELINE.value].items():
      for regime, test in regimes.items():
        majority = test["majority"]
        print(f"{variant} vs {_BASELINE.value}, {regime}: majority vote "
              f"{majority['first_only']} vs {majority['second_only']} images right only by one, "
              f"p = {majority['p_value']:.2g}; per seed p = "
              + ", ".join(f"{value['p_value']:.2g}" for value in test["per_seed"].values()))
  path = os.path.join(_RUNS.value, "seed_summary.json")
  with open(path, "w") as file:
    json.dump(summary, file, indent=2)
  print(f"wrote {path}")


if __name__ == "__main__":
  runs.run_main(main)

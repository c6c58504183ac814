"""What an IF-GAN run (or its baseline, E alone) on synthetic faces removes and keeps, against
ground truth:

    python -m launch.ifgan_report --workdir=W

The run's test people's images at peak frames and at all intensities
(`flaxflow.analysis.ifgan_ground_truth.face_sets`), scored by the independent readers
(`flaxflow.scoring`) through `flaxflow.tasks.ifgan.ground_truth_metrics` with E's diagnostics:
the numbers of the run's final metrics, recomputed from its checkpoint (any --step). Also each
target face's share of the true expression change on the training split, and for IF-GAN a grid
PNG (--figure): per class three peak-frame test inputs, G(input) and the ground truth, then the
class's target face at full intensity.

Writes WORKDIR/analysis/ifgan_report.json.
"""

import numpy as np
from absl import app, flags

from flaxflow import analysis, scoring
from flaxflow.analysis import ifgan_ground_truth as truth_lib
from flaxflow.data.synthetic_faces import factors
from flaxflow.gan import pixels
from flaxflow.tasks import ifgan as ifgan_task
from flaxflow.launch import faces, research, runs

_RUN = research.define_run_flags()
_FIGURE = flags.DEFINE_string("figure", None,
                              "Grid PNG (default: WORKDIR/analysis/ifgan_grid.png).")
_GRID_INPUTS = flags.DEFINE_integer("grid_inputs", 3, "Test inputs per class in the grid.")


def grid(faces_set: truth_lib.FaceSet, generated: np.ndarray, targets: np.ndarray,
         per_class: int) -> np.ndarray:
  """(classes, 3 * per_class + 1, H, W, C): per class input, G(input), truth, ..., target."""
  chosen = faces.first_per_class(faces_set.label, per_class)
  rows = []
  for label in np.unique(faces_set.label):
    picked = chosen[faces_set.label[chosen] == label]
    cells = [image for index in picked for image in (faces_set.image[index], generated[index],
                                                      faces_set.truth[index])]
    rows.append(np.stack(cells + [targets[label]]))
  return np.stack(rows)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  run = research.start(_RUN)
  if run.config.model.name not in ifgan_task.MODEL_NAMES:
    raise ValueError(f"--workdir={research.WORKDIR.value}: a run of {run.config.model.name}, "
                     f"not of {' or '.join(ifgan_task.MODEL_NAMES)}")
  if not ifgan_task.is_synthetic_faces(run.config):
    raise ValueError(f"--workdir={research.WORKDIR.value}: a run on {run.config.dataset}; only "
                     "synthetic_faces has ground truth")
  build = faces.scoring_build(run.config)
  truth = ifgan_task.ground_truth_of(build, faces.scoring_readers(run.config),
                                     run.config.eval_split)
  inference = ifgan_task.Inference(run.model, run.config.eval_batch_size)
  report = {"workdir": research.WORKDIR.value, "step": run.step,
            "split": run.config.eval_split, "target_face": run.config.target_face,
            "target_shares": ifgan_task.target_face_shares(build),
            **ifgan_task.ground_truth_metrics(inference, run.variables, truth, diagnostics=True)}
  for regime in scoring.COLUMNS:
    print(f"{regime}: " + " ".join(f"{name}={value:.4f}"
                                   for name, value in sorted(report[regime].items())))
  for target_face, shares in report["target_shares"].items():
    print(f"target {target_face}: share of the true expression change "
          + ", ".join(f"{name} {value:.3f}" for name, value in shares.items()))
  if "generator" in run.model.networks:
    peak = truth.sets["peak"]
    generated = np.asarray(pixels.to_uint8(inference.generate(run.variables, peak.image)))
    targets = np.asarray(pixels.to_uint8(run.variables["constants"]["target_faces"][:, -1]))
    figure = _FIGURE.value or research.output_path(_RUN, "ifgan_grid.png")
    columns = [f"{name} {index + 1}" for index in range(_GRID_INPUTS.value)
               for name in ("input", "G(input)", "truth")] + ["target face"]
    analysis.save_image_table(figure, grid(peak, generated, targets, _GRID_INPUTS.value),
                              list(factors.CLASS_NAMES), columns, f"{run.config.dataset} "
                              f"{run.config.eval_split} at peak frames, step {run.step}")
    print(f"wrote {figure}")
  print(f"wrote {research.write_json(research.output_path(_RUN, 'ifgan_report.json'), report)}")


if __name__ == "__main__":
  runs.run_main(main)

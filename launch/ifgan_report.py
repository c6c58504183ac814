"""What an IF-GAN run on synthetic faces removes and keeps, against ground truth:

    python -m launch.ifgan_report --workdir=W

* identity left in G's output: linear probes of the subject (and of the expression) on the
  pixels of x and of G(x), for new images of training subjects (drawn after the dataset's own,
  never trained on), half of each person's images to fit on and half to test on;
* G(x) against the ground truth: L1 and SSIM of G(x), on the test split (people never seen),
  against the render of the average person (`mean_identity`, upright, even light, no noise)
  with x's expression and intensity; the class's average face (G's training target) and the
  input itself against the same render, as references;
* a grid PNG (--figure): per class three test inputs, G(input) and the ground truth, then the
  class's average face.

Writes WORKDIR/analysis/ifgan_report.json.
"""

import numpy as np
from absl import app, flags

from flaxflow.data import datasets
from flaxflow import analysis, scoring
from flaxflow.analysis import probes
from flaxflow.scoring import metrics
from flaxflow.tasks import ifgan as ifgan_task
from flaxflow.launch import faces, research, runs

_RUN = research.define_run_flags()
_FIGURE = flags.DEFINE_string("figure", None, "Grid PNG (default: WORKDIR/analysis/ifgan_grid.png).")
_SUBJECTS = flags.DEFINE_integer("subjects", 30, "Training subjects of the identity probe.")
_PER_SUBJECT = flags.DEFINE_integer("per_subject", 20, "New images of each probed subject.")
_GRID_INPUTS = flags.DEFINE_integer("grid_inputs", 3, "Test inputs per class in the grid.")


def identity_probes(run, num_subjects: int, per_subject: int) -> dict:
  examples = faces.unseen_images_of_subjects(run.config, "train", num_subjects, per_subject)
  generated = ifgan_task.generated_faces(run.model, run.variables, examples["image"])
  test = probes.held_out_within_groups(examples["subject"])
  return {"subjects": num_subjects, "images_per_subject": per_subject,
          "input": probes.pixel_probes(examples["image"], examples["label"],
                                       examples["subject"], test),
          "generated": probes.pixel_probes(generated, examples["label"], examples["subject"],
                                           test)}


def ground_truth_scores(run, test: dict, generated: np.ndarray, truth: np.ndarray) -> dict:
  averages = ifgan_task.to_uint8(run.variables["constants"]["average_faces"])[test["label"]]
  scores = {}
  for name, images in (("generated", generated), ("class_average_face", averages),
                       ("input", test["image"])):
    scores[name] = {"l1": float(metrics.l1_errors(images, truth).mean()),
                    "ssim": float(metrics.ssim_scores(images, truth).mean())}
  return scores


def grid(test: dict, generated: np.ndarray, truth: np.ndarray, averages: np.ndarray,
         per_class: int) -> np.ndarray:
  """(classes, 3 * per_class + 1, H, W, C): per class input, G(input), truth, ..., average."""
  chosen = faces.first_per_class(test["label"], per_class)
  rows = []
  for label in np.unique(test["label"]):
    picked = chosen[test["label"][chosen] == label]
    cells = [image for index in picked for image in (test["image"][index], generated[index],
                                                      truth[index])]
    rows.append(np.stack(cells + [averages[label]]))
  return np.stack(rows)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  run = research.start(_RUN)
  if run.config.model.name != "ifgan":
    raise ValueError(f"--workdir={research.WORKDIR.value}: a run of {run.config.model.name}, "
                     "not ifgan")
  test = faces.split_with_factors(run.config, run.config.eval_split)
  generated = ifgan_task.generated_faces(run.model, run.variables, test["image"])
  truth = scoring.average_identity_renders(test["label"], test["intensity"],
                                         test["image"].shape[1])
  class_names = datasets.load(run.config.dataset, "train", run.config.data_dir)[1].class_names
  report = {"workdir": research.WORKDIR.value, "step": run.step,
            "identity": identity_probes(run, _SUBJECTS.value, _PER_SUBJECT.value),
            "ground_truth": {"split": run.config.eval_split, "images": len(test["label"]),
                             **ground_truth_scores(run, test, generated, truth)}}
  averages = ifgan_task.to_uint8(run.variables["constants"]["average_faces"])
  figure = _FIGURE.value or research.output_path(_RUN, "ifgan_grid.png")
  columns = [f"{name} {index + 1}" for index in range(_GRID_INPUTS.value)
             for name in ("input", "G(input)", "truth")] + ["average face"]
  analysis.save_image_table(figure, grid(test, generated, truth, averages, _GRID_INPUTS.value),
                            list(class_names), columns,
                            f"{run.config.dataset} {run.config.eval_split}, step {run.step}")
  identity = report["identity"]
  print(f"subject probe on {identity['subjects']} training subjects' new images: input "
        f"{100 * identity['input']['subject_accuracy']:.1f}%, G(input) "
        f"{100 * identity['generated']['subject_accuracy']:.1f}% (chance "
        f"{100 / identity['subjects']:.1f}%); expression probe: input "
        f"{100 * identity['input']['expression_accuracy']:.1f}%, G(input) "
        f"{100 * identity['generated']['expression_accuracy']:.1f}%")
  for name in ("generated", "class_average_face", "input"):
    scores = report["ground_truth"][name]
    print(f"{name} vs the average-identity render ({report['ground_truth']['images']} "
          f"{run.config.eval_split} images): L1 {scores['l1']:.4f}, SSIM {scores['ssim']:.4f}")
  print(f"wrote {figure} and "
        f"{research.write_json(research.output_path(_RUN, 'ifgan_report.json'), report)}")


if __name__ == "__main__":
  runs.run_main(main)

"""The BPLF paper's ablation (Table 3): Glow, Glow with SVD, BPLF 3×3 conv, BPLF 3×3&1×1 conv,
and both BPLF rows with SVD, trained at equal steps and batch and evaluated on the test split.

    python -m launch.ablate --workdir=W  # small, on digits: launch/configs/ablation_digits.py
    python -m launch.ablate --config=launch/configs/ablation_paper.py:emotion_set/64 --workdir=W

Each row trains into W/<row> (rerunning resumes; finished rows are read back from
W/<row>/ablation_row.json), and W/ablation.md gets the Markdown table of test bits/dim with the
command and settings that produced it.
"""

import json
import os
import shlex
import sys
import time

import jax
import ml_collections
from absl import app, flags

from flaxflow import analysis, models, optimization
from flaxflow.workdir import read_json
from flaxflow.launch import research, runs

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                               "ablation_digits.py")
_CONFIG = runs.define_config_flag(_DEFAULT_CONFIG, "Ablation config file.")
_ROWS = flags.DEFINE_list("rows", None, "Rows to run, by folder name (default: all six).")


def run_row(config: ml_collections.ConfigDict, row: analysis.AblationRow, train: dict,
            test: dict, class_names, row_dir: str) -> dict:
  """Trains and evaluates one row, or reads back the result of a finished one."""
  result_path = os.path.join(row_dir, analysis.ablation.ROW_FILE)
  if os.path.exists(result_path):
    result = read_json(result_path)
    # Compared as JSON, which holds tuples (the image shape) as lists.
    if (result["model"] == json.loads(json.dumps(row.model))
        and result["num_steps"] == config.num_steps):
      return result
    raise ValueError(f"{result_path} is of other settings; pass a new --workdir")
  start = time.perf_counter()
  # The test split every eval_every steps gives the curves of launch.plot_curves (Fig. 7).
  state = research.train_on_examples(analysis.row_config(config, row), train, row_dir,
                                     class_names, eval_examples=test)
  seconds = time.perf_counter() - start
  report = analysis.evaluate(models.create(row.model), state.variables(use_ema=True),
                             analysis.array_batches(test, config.eval_batch_size),
                             n_bits=config.n_bits, class_names=class_names,
                             rng=jax.random.PRNGKey(config.seed))
  result = {"slug": row.slug, "label": row.label, "model": row.model,
            "num_steps": config.num_steps,
            "parameters": optimization.count_parameters(state.params), "seconds": seconds,
            **report}
  research.write_json(result_path, result)
  return result


def settings_line(config: ml_collections.ConfigDict) -> str:
  model = ", ".join(f"{name}={value}" for name, value in config.model.items() if name != "name")
  return (f"{config.dataset}, {config.n_bits}-bit, {config.num_steps} steps of batch "
          f"{config.batch_size}, {config.optimizer.name} lr {config.optimizer.learning_rate:g} "
          f"({config.optimizer.schedule}, {config.optimizer.warmup_steps} warm-up steps), EMA "
          f"{config.ema_decay:g}, seed {config.seed}; every row: {model}; SVD rank "
          f"{config.svd_rank}. Test bits/dim with one draw of uniform dequantisation noise, "
          "EMA parameters.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config, workdir = runs.config_from_flag(_CONFIG), os.path.abspath(research.WORKDIR.value)
  runs.start_devices()
  rows = analysis.ablation_rows(config.model, config.svd_rank, _ROWS.value or ())
  train, info = research.split_examples(config, "train")
  test, _ = research.split_examples(config, config.eval_split)
  class_names = info.class_names if config.model.num_classes else ()
  results = []
  for row in rows:
    results.append(run_row(config, row, train, test, class_names, os.path.join(workdir, row.slug)))
    print(f"{row.label}: test bits/dim {results[-1]['bits_per_dim']:.4f}")
  command = "python -m launch.ablate " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
  document = (f"Command: `{command}`\n\nSettings: {settings_line(config)}\n\n"
              f"{analysis.markdown_table(results)}\n")
  path = os.path.join(workdir, "ablation.md")
  with open(path, "w") as file:
    file.write(document)
  print(document)
  print(f"wrote {path}")


if __name__ == "__main__":
  runs.run_main(main)

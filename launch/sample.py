"""Samples of a trained run: `python -m launch.sample --workdir W`.

For every temperature, a per-class grid (one row per class, labelled with its name;
class-conditional models) and an unconditional grid of p(x), as
W/analysis/samples/{classes,unconditional}_T<t>.png.
"""

import jax
from absl import app, flags

from flaxflow import analysis, images
from flaxflow.launch import research, runs

_RUN = research.define_run_flags()

_TEMPERATURES = flags.DEFINE_list("temperatures", ["0.5", "0.7", "0.85", "1.0"],
                                  "Sampling temperatures (the priors' scales are multiplied by t).")
_SAMPLES_PER_CLASS = flags.DEFINE_integer("samples_per_class", 10, "Columns of the class grids.")
_GRID = flags.DEFINE_list("unconditional_grid", ["8", "8"], "Rows and columns of p(x) grids.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same noise at every temperature).")


def parse_temperatures(values) -> list:
  try:
    temperatures = [float(value) for value in values]
  except ValueError:
    raise app.UsageError(f"--temperatures={','.join(values)}: expected numbers") from None
  if not temperatures or min(temperatures) <= 0:
    raise app.UsageError(f"--temperatures={','.join(values)}: expected positive numbers")
  return temperatures


def parse_grid(values) -> tuple:
  if len(values) != 2 or not all(value.isdigit() and int(value) > 0 for value in values):
    raise app.UsageError(f"--unconditional_grid={','.join(values)}: expected ROWS,COLUMNS")
  return int(values[0]), int(values[1])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  temperatures = parse_temperatures(_TEMPERATURES.value)
  rows, columns = parse_grid(_GRID.value)
  run = research.start(_RUN)
  _, info = runs.load_split(run.config, "train")
  rng = jax.random.PRNGKey(_SEED.value)
  n_bits = run.config.n_bits
  written = []
  if run.model.is_class_conditional:
    grids = analysis.class_sample_grids(run.model, run.variables, rng, temperatures=temperatures,
                                        samples_per_class=_SAMPLES_PER_CLASS.value, n_bits=n_bits)
    for temperature, grid in grids.items():
      written.append(images.save_image_grid(
          research.output_path(_RUN, "samples", f"classes_T{temperature:.2f}.png"), grid,
          info.class_names))
  for temperature in temperatures:
    grid = analysis.unconditional_samples(run.model, run.variables, rng, rows=rows,
                                          columns=columns, temperature=temperature,
                                          n_bits=n_bits)
    written.append(images.save_image_grid(
        research.output_path(_RUN, "samples", f"unconditional_T{temperature:.2f}.png"), grid))
  print("\n".join(f"wrote {path}" for path in written))


if __name__ == "__main__":
  runs.run_main(main)

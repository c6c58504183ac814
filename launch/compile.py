"""Compiles a config's train step for a TPU slice or GPUs from this machine, without them:
`python -m launch.compile --config=launch/configs/emotion_set_bplf.py --target=tpu:v5e:16x16`.

Per chip: the memory the step needs against the chip's and whether it fits (a TPU's compiler
decides; a GPU's step is compared with the memory JAX gives it), its FLOPs, a roofline lower
bound of the step time (an estimate), and the compile time. `--max_batch` searches, by compiling,
the largest per-chip batch that fits; `--json=FILE` writes the report as one JSON object. Needs
`libtpu` and `jax-cuda12-plugin` (the `test` extra). `--ablation_row` compiles one row of an
ablation config (`launch.ablate`'s). Exit codes: `launch.runs`.
"""

import json
import shlex
import sys
from typing import Any, Dict

import jax
import ml_collections
from absl import app, flags

from flaxflow import analysis, aot
from flaxflow.launch import runs

_CONFIG = runs.define_config_flag(None, "Training config file whose train step is compiled.")
_TARGET = flags.DEFINE_string("target", None, "tpu:<chip>:<topology> (e.g. tpu:v5e:2x4) or "
                              "gpu:<model>:<count> (e.g. gpu:h100:8).")
_PER_CHIP_BATCH = flags.DEFINE_integer(
    "per_chip_batch", None, "Images per chip (default: the config's batch_size over the chips, "
    "at least 1).")
_MAX_BATCH = flags.DEFINE_boolean("max_batch", False, "Also search the largest per-chip batch "
                                  "that fits, by compiling (from --per_chip_batch).")
_ABLATION_ROW = flags.DEFINE_string(
    "ablation_row", None, "With an ablation config (launch/configs/ablation_paper.py:<dataset>): "
    "compile this row's model, by launch.ablate's folder name (e.g. bplf_3x3_svd).")
_JSON = flags.DEFINE_string("json", None, "Write the report to this file as one JSON object.")

_GIB = 2 ** 30


def _gib(value: Any) -> str:
  return "-" if value is None else f"{value / _GIB:.2f} GiB"


def table(record: Dict[str, Any]) -> str:
  """The report as aligned `name  value` lines."""
  roofline = record.get("roofline") or {}
  rows = [("target", f"{record['target']} ({record['chips']} x {record['chip']})"),
          ("per-chip batch", f"{record['per_chip_batch']} (global {record['global_batch']})"),
          ("fits", "yes" if record["fits"] else f"no {record['compiler_message']}".strip()),
          ("peak memory per chip", f"{_gib(record['peak_bytes_per_chip'])} of "
                                   f"{_gib(record['memory_bytes_per_chip'])}"),
          ("  arguments / outputs / aliased / temporaries",
           " / ".join(_gib(record[f"{name}_bytes"])
                      for name in ("argument", "output", "alias", "temp")))]
  if record["flops_per_chip_per_step"] is not None:
    rows += [("FLOPs per chip per step", f"{record['flops_per_chip_per_step']:.3e}"),
             ("FLOPs per image", f"{record['flops_per_image']:.3e}"),
             ("bytes per chip per step (estimate)",
              f"{record['bytes_accessed_per_chip_per_step']:.3e}")]
  if roofline:
    rows += [("step time, roofline lower bound (estimate)",
              f"{roofline['step_seconds_lower_bound'] * 1e3:.2f} ms ({roofline['bound_by']}-"
              f"bound) -> at most {roofline['images_per_second_per_chip_upper_bound']:.0f} "
              f"img/s per chip, {record['images_per_second_upper_bound']:.0f} img/s in all")]
  if record["flops_per_chip_per_step"] is not None:
    trips = ", ".join(str(trips or "?") for trips in record["loop_trip_counts"])
    rows.append(("compiled program", f"{record['fusions']} fused operations, "
                                     f"{len(record['loop_trip_counts'])} loops ({trips} trips)"))
  rows.append(("compile", f"{record['compile_seconds']:.1f} s ({record['compile_cpu_seconds']:.1f}"
                          f" s of CPU, {record['lower_cpu_seconds']:.1f} s of it tracing and "
                          "lowering)"))
  if "max_per_chip_batch" in record:
    probes = ", ".join(f"{p['per_chip_batch']}:{'fits' if p['fits'] else 'no'}"
                       for p in record["max_batch_probes"])
    rows.append(("largest per-chip batch that fits", f"{record['max_per_chip_batch']} "
                                                     f"(compiled: {probes})"))
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _verdict(report: aot.StepReport) -> str:
  """One probe in a line: whether it fits, its peak or the compiler's refusal, its CPU time."""
  peak = f"peak {_gib(report.peak_bytes_per_chip)}"
  verdict = f"fits, {peak}" if report.fits else f"no, {report.compiler_message or peak}"
  return f"{verdict}, {report.compile_cpu_seconds:.0f} s of CPU"


def record_of(report: aot.StepReport) -> Dict[str, Any]:
  """The report as the JSON object `--json` writes, with the figures derived from it."""
  record = report.as_dict()
  if report.flops_per_chip_per_step is not None:
    record["flops_per_image"] = report.flops_per_chip_per_step / report.per_chip_batch
  if report.roofline:
    record["images_per_second_upper_bound"] = (
        report.roofline["images_per_second_per_chip_upper_bound"] * report.chips)
  return record


def ablation_row_config(config: ml_collections.ConfigDict,
                        slug: str) -> ml_collections.ConfigDict:
  """The config `launch.ablate` trains the row `slug` of the ablation `config` with."""
  if "svd_rank" not in config:
    raise ValueError(f"--ablation_row={slug}: the config has no svd_rank, so it is no ablation "
                     "config; expected e.g. launch/configs/ablation_paper.py:emotion_set/64")
  try:
    row, = analysis.ablation_rows(config.model, config.svd_rank, [slug])
  except ValueError as error:
    raise ValueError(f"--ablation_row={slug}: {error}") from None
  return analysis.row_config(config, row)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Compile-only devices need no backend of their own: keep this host's JAX on its CPU (it never
  # probes for a TPU or GPU it does not have).
  jax.config.update("jax_platforms", "cpu")
  if not flags.FLAGS["config"].present:
    raise ValueError("--config: expected a training config file, e.g. "
                     "--config=launch/configs/emotion_set_bplf.py")
  config = runs.config_from_flag(_CONFIG)
  if _ABLATION_ROW.value is not None:
    config = ablation_row_config(config, _ABLATION_ROW.value)
  aot.check_config(config)
  if _TARGET.value is None:
    raise ValueError("--target: expected tpu:<chip>:<topology> or gpu:<model>:<count>, e.g. "
                     "--target=tpu:v5e:2x4 or --target=gpu:h100:8")
  target = aot.parse_target(_TARGET.value)
  if _PER_CHIP_BATCH.value is not None:
    aot.check_per_chip_batch(_PER_CHIP_BATCH.value)
  devices = aot.target_devices(target)
  per_chip_batch = (max(1, -(-config.batch_size // len(devices))) if _PER_CHIP_BATCH.value is None
                    else _PER_CHIP_BATCH.value)

  def compile_at(batch: int) -> aot.StepReport:
    report = aot.compile_train_step(config, target, batch, devices)
    # A search compiles for minutes: say each probe as it ends, so an interrupted one still tells.
    print(f"compiled at {batch} per chip: " + _verdict(report), file=sys.stderr, flush=True)
    return report

  report = compile_at(per_chip_batch)
  # The command first, so that a record read later says what made it.
  record = {"command": shlex.join(["python", "-m", "launch.compile", *sys.argv[1:]]),
            **record_of(report)}
  if _MAX_BATCH.value:
    # A TPU compiler refuses a program over its memory in seconds, before generating code.
    largest, probes = aot.max_per_chip_batch(compile_at, report,
                                             refusals_are_cheap=target.chip.platform == "tpu")
    record.update(max_per_chip_batch=largest,
                  max_batch_probes=[record_of(probe) for probe in probes])
  print(table(record), flush=True)
  if _JSON.value:
    with open(_JSON.value, "w") as file:
      json.dump(record, file, indent=2)


if __name__ == "__main__":
  runs.run_main(main)

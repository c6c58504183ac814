"""flaxflow.aot and `python -m launch.compile`: a tiny BPLF compiled for a TPU slice and for GPUs
from this CPU machine, with compile-only devices (libtpu, jax-cuda12-plugin: the test extra)."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from flaxflow import aot, conv, parallel
from flaxflow.gan import decgan
from flaxflow.launch.configs import digits_bplf, digits_classifier

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU, GPU = "tpu:v5e:2x2", "gpu:h100:2"


def tiny_bplf():
  """The digits BPLF (8x8, 10 classes) at one level of one step, width 8."""
  config = digits_bplf.get_config()
  config.model.update(levels=1, steps_per_level=1, width=8)
  return config


@pytest.fixture(scope="module")
def tpu_report():
  return aot.compile_train_step(tiny_bplf(), aot.parse_target(TPU), per_chip_batch=4)


def test_tiny_bplf_compiles_for_a_tpu_slice_with_its_memory(tpu_report):
  assert tpu_report.fits and tpu_report.chips == 4 and tpu_report.global_batch == 16
  assert tpu_report.memory_bytes_per_chip == 16 * 2 ** 30
  assert 0 < tpu_report.argument_bytes <= tpu_report.peak_bytes_per_chip < 2 ** 30
  assert tpu_report.peak_bytes_per_chip == (tpu_report.argument_bytes + tpu_report.output_bytes
                                            + tpu_report.temp_bytes - tpu_report.alias_bytes)
  assert tpu_report.flops_per_chip_per_step > 0 and tpu_report.loops_without_trip_count == 0
  bound = tpu_report.roofline
  assert bound["step_seconds_lower_bound"] == max(bound["compute_seconds"],
                                                  bound["memory_seconds"]) > 0
  assert "estimate" in bound["estimate"] or "lower bound" in bound["estimate"]


def test_tiny_bplf_compiles_for_gpus_with_its_memory(tpu_report):
  report = aot.compile_train_step(tiny_bplf(), aot.parse_target(GPU), per_chip_batch=4)
  h100 = aot.load_chip("gpu", "h100")
  assert report.fits and report.chips == 2
  assert report.memory_bytes_per_chip == int(0.75 * h100.memory_bytes)
  assert 0 < report.peak_bytes_per_chip < 2 ** 30
  # The same per-chip program on both: about the same arithmetic (a TPU pads small arrays to
  # its tiles, so its bytes differ).
  assert report.flops_per_chip_per_step == pytest.approx(tpu_report.flops_per_chip_per_step,
                                                         rel=0.2)


def test_a_far_too_large_batch_does_not_fit_on_the_tpu():
  report = aot.compile_train_step(tiny_bplf(), aot.parse_target(TPU), per_chip_batch=2 ** 26)
  assert not report.fits and report.peak_bytes_per_chip is None
  assert "RESOURCE_EXHAUSTED" in report.compiler_message


@pytest.fixture(scope="module")
def tpu_mesh():
  return parallel.make_mesh(aot.target_devices(aot.parse_target(TPU)))


def test_under_a_tpu_target_the_step_has_the_native_convolution_and_no_products(tpu_mesh):
  config = tiny_bplf()
  tpu_step = aot.lower_config(config, 16, tpu_mesh).as_text()
  with conv.lax_convolutions():
    lax_step = aot.lower_config(config, 16, tpu_mesh).as_text()
  cpu_step = aot.lower_config(config, 16, parallel.make_mesh(jax.devices()[:1])).as_text()
  assert tpu_step.count("stablehlo.convolution") > 0
  assert tpu_step == lax_step  # The CPU products path is not taken, whatever its switch says.
  assert "stablehlo.convolution" not in cpu_step


def test_g_1_classes_are_split_over_the_chips(tpu_mesh):
  """10 classes on 4 chips: g_1 runs on 12 rows split over the chips (3 each), not on all 10
  on every chip; on one chip it runs on the 10 classes."""
  config = tiny_bplf()
  on_chips = aot.lower_config(config, 16, tpu_mesh).as_text()
  alone = aot.lower_config(config, 16, parallel.make_mesh(jax.devices()[:1])).as_text()
  # x_0 broadcast to the classes' rows: (rows, 4, 4, 2) for 8x8x1 images squeezed once.
  for text, rows, not_rows in ((on_chips, 12, 10), (alone, 10, 12)):
    assert f"tensor<{rows}x4x4x2xf32>" in text and f"tensor<{not_rows}x4x4x2xf32>" not in text
  assert "sharding_constraint" in on_chips and "sharding_constraint" not in alone


def test_the_classifiers_work_per_chip_does_not_grow_with_the_chips():
  """The classifier scores every class with the classes stacked along the batch axis: each chip
  keeps its own examples' rows, so its work is the same on 8 chips as on 4 (class-major rows had
  it compute other chips' examples too)."""
  config = digits_classifier.get_config()
  config.model.update(levels=1, steps_per_level=1, width=8, h_steps=1, h_width=8)
  flops = [aot.compile_train_step(config, aot.parse_target(target),
                                  per_chip_batch=4).flops_per_chip_per_step
           for target in (TPU, "tpu:v5e:2x4")]
  assert flops[0] == flops[1] > 0


def test_decgan_partners_cost_each_chip_the_same_on_more_chips():
  """DECGAN pairs each image with a partner of another expression (`partner_offsets`): each chip
  holds its own rows and takes a few rows from the next chip, so that its memory does not grow
  with the chips (a draw over the whole batch scored batch^2 pairs, and gathering partners by row
  number had every chip collect the whole batch)."""

  def pair_up(labels, images):
    offsets = decgan.partner_offsets(labels, jax.random.PRNGKey(0))
    return decgan.take_partners(images, offsets), decgan.take_partners(labels, offsets)

  temporaries = []
  for target in (TPU, "tpu:v5e:2x4"):
    mesh = parallel.make_mesh(aot.target_devices(aot.parse_target(target)))
    batch, sharding = 24 * mesh.size, parallel.batch_sharding(mesh)
    compiled = jax.jit(pair_up, out_shardings=sharding).lower(
        jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding),
        jax.ShapeDtypeStruct((batch, 16, 16, 1), jnp.float32, sharding=sharding)).compile()
    assert "all-gather" not in compiled.as_text()
    temporaries.append(compiled.memory_analysis().temp_size_in_bytes)
  assert temporaries[0] == temporaries[1]


def test_program_costs_count_each_loop_body_times_its_trips():
  devices = aot.target_devices(aot.parse_target(TPU))
  mesh = parallel.make_mesh(devices)

  def loss(weights, x):
    body = lambda h, w: (jnp.tanh(h @ w), None)
    return jnp.sum(jax.lax.scan(body, x, weights)[0])

  weights = jax.ShapeDtypeStruct((5, 128, 128), jnp.float32,
                                 sharding=parallel.replicated_sharding(mesh))
  x = jax.ShapeDtypeStruct((32, 128), jnp.float32, sharding=parallel.batch_sharding(mesh))
  text = jax.jit(jax.grad(loss)).lower(weights, x).compile().as_text()
  costs = aot.program_costs(text)
  # Per chip 8 rows: forward h @ w, backward its two transposes, each 5 times.
  assert costs.flops == 5 * 3 * 2 * 8 * 128 * 128
  assert costs.loops_without_trip_count == 0 and costs.bytes_accessed > 128 * 128 * 5 * 4
  assert costs.loop_trip_counts == (5, 5) and costs.fusions > 0  # The forward and backward scans.


def test_max_batch_search_finds_the_largest_batch_by_compiling():
  compiled = []

  def compile_at(batch):  # A step of 1000 + 300 bytes per image on a chip of 10,000 bytes.
    compiled.append(batch)
    peak = 1000 + 300 * batch
    return aot.StepReport(target=TPU, chip="chip", chips=1, per_chip_batch=batch,
                          global_batch=batch, fits=peak <= 10_000, memory_bytes_per_chip=10_000,
                          peak_bytes_per_chip=peak if peak <= 10_000 else None)

  largest, probes = aot.max_per_chip_batch(compile_at, compile_at(2))
  assert largest == 30 and [p.per_chip_batch for p in probes] == sorted(set(compiled))
  assert len(compiled) <= 6
  assert aot.max_per_chip_batch(compile_at, compile_at(100))[0] == 30


def test_max_batch_search_narrows_fast_where_the_peak_stops_growing():
  """The line through the small probes overshoots (here a convex peak, flat just over the chip's
  memory above 1000 images) and keeps pointing past the bracket's upper edge, which the search
  once crept down from one batch per compile."""
  compiled = []

  def compile_at(batch):
    compiled.append(batch)
    peak = int(10 * batch + 0.09 * batch ** 2) if batch <= 1000 else 100_500
    return aot.StepReport(target=GPU, chip="chip", chips=1, per_chip_batch=batch,
                          global_batch=batch, fits=peak <= 100_000, memory_bytes_per_chip=100_000,
                          peak_bytes_per_chip=peak)

  largest, _ = aot.max_per_chip_batch(compile_at, compile_at(8))
  assert largest == 1000 and len(compiled) <= 16


def test_max_batch_search_spends_refusals_where_they_are_cheap():
  """A TPU compiler's refusal takes seconds and says the temporaries it needed: from one probe
  the search finds the largest batch with one more compile that fits."""
  fitting = []

  def compile_at(batch):  # 2000 fixed + 300 bytes of temporaries per image, 10,000 bytes.
    temp, fixed = 300 * batch, 2000
    fits = fixed + temp <= 10_000
    fitting.extend([batch] if fits else [])
    return aot.StepReport(target=TPU, chip="chip", chips=1, per_chip_batch=batch,
                          global_batch=batch, fits=fits, memory_bytes_per_chip=10_000,
                          peak_bytes_per_chip=fixed + temp if fits else None, temp_bytes=temp,
                          refusal_limit_bytes=None if fits else 10_000 - fixed)

  largest, probes = aot.max_per_chip_batch(compile_at, compile_at(2), refusals_are_cheap=True)
  assert largest == 26 and fitting == [2, 26] and len(probes) <= 5
  # Without the refusals' figures (another compiler's message) it still ends, by halving.
  fitting.clear()
  unmeasured = lambda batch: dataclasses.replace(
      compile_at(batch), temp_bytes=None if batch > 26 else 300 * batch, refusal_limit_bytes=None)
  largest, probes = aot.max_per_chip_batch(unmeasured, unmeasured(2), refusals_are_cheap=True)
  assert largest == 26 and len(probes) <= 9


def _rematerializing_compiler(fixed_temp, per_image, late_limit=None, floor_from=None):
  """A TPU compiler near its limit: temporaries of `fixed_temp` + `per_image` bytes per image
  against 8000 for them (a chip of 10,000); a step fits with a buffer sum over the memory where
  rematerializing saves up to 3000 bytes, and a refusal asks for what it still needs. Past
  `late_limit` images the steps it let through are refused after code generation, with a
  message that names no temporaries; from `floor_from` images on, a refusal asks for 8010 bytes
  until the saving runs out."""
  def compile_at(batch):
    demand = fixed_temp + per_image * batch
    needed = max(demand - 3000, min(demand, 8000))
    if floor_from is not None and batch >= floor_from:
      needed = max(needed, 8010)
    if needed > 8000:
      return aot.StepReport(target=TPU, chip="chip", chips=1, per_chip_batch=batch,
                            global_batch=batch, fits=False, memory_bytes_per_chip=10_000,
                            peak_bytes_per_chip=None, temp_bytes=needed,
                            refusal_limit_bytes=8000)
    fits = late_limit is None or batch <= late_limit
    return aot.StepReport(target=TPU, chip="chip", chips=1, per_chip_batch=batch,
                          global_batch=batch, fits=fits, memory_bytes_per_chip=10_000,
                          peak_bytes_per_chip=2000 + demand if fits else None,
                          temp_bytes=demand if fits else None)
  return compile_at


@pytest.mark.parametrize("fixed_temp, per_image, largest_batch, firsts, compiles_that_fit", [
    (0, 300, 36, (2, 30, 35, 36), 2), (1000, 30, 333, (1, 2, 8), 4)])
def test_max_batch_search_does_not_creep_where_the_compiler_rematerializes(
    fixed_temp, per_image, largest_batch, firsts, compiles_that_fit):
  """The line through steps that fit undershoots where the compiler rematerializes, and two
  such steps have equal peaks. The search once crept from there one batch per compile: down
  from its first refusal (MNIST BPLF on v5e-8: 3142, 3141, ... for over 40 minutes), or up by
  steps that fit, a compile of minutes each (here 102 of them from 2)."""
  compile_at = _rematerializing_compiler(fixed_temp, per_image)
  for first in firsts:
    largest, probes = aot.max_per_chip_batch(compile_at, compile_at(first),
                                             refusals_are_cheap=True)
    batches = [probe.per_chip_batch for probe in probes]
    assert largest == largest_batch and len(probes) <= 8, batches
    assert sum(probe.fits for probe in probes) <= compiles_that_fit, batches


def test_max_batch_search_halves_where_late_refusals_name_no_temporaries():
  """Past 300 images the compiler refuses after generating code (MNIST BPLF on v5e-8: 1894 to
  1896 images, about 3 minutes of CPU each, "Exceeded hbm capacity by 3.08M") while the
  refusals' line points at 366: each such refusal costs a compile, and the line gives way to
  the middle of the bracket as soon as it points at or past one."""
  compile_at = _rematerializing_compiler(0, 30, late_limit=300)
  largest, probes = aot.max_per_chip_batch(compile_at, compile_at(8), refusals_are_cheap=True)
  late = [probe.per_chip_batch for probe in probes if not probe.fits and probe.temp_bytes is None]
  assert largest == 300 and len(late) <= 5, [probe.per_chip_batch for probe in probes]


def test_max_batch_search_steps_down_by_eighths_on_the_compilers_floor():
  """From 300 images up the refusals all ask for the same temporaries, just over the limit, and
  their line points one batch under the last refusal each time: the search once crept down
  there one refusal per batch (BPLF 3x3-1x1 on v5e-8: 359, 358, 357, ...)."""
  compile_at = _rematerializing_compiler(0, 30, floor_from=300)
  largest, probes = aot.max_per_chip_batch(compile_at, compile_at(8), refusals_are_cheap=True)
  batches = [probe.per_chip_batch for probe in probes]
  assert largest == 299 and len(probes) <= 16 and sum(p.fits for p in probes) <= 5, batches


def test_the_refusal_message_gives_the_temporaries_it_needed():
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (23.74G) exceeds available HBM (15.75G).")
  assert aot.refused_memory(message) == (int(23.74 * 2 ** 30), int(15.75 * 2 ** 30))
  assert aot.refused_memory("RESOURCE_EXHAUSTED: out of memory") == (None, None)


@pytest.mark.parametrize("text, message", [
    ("tpu:v9:2x2", "unknown tpu 'v9'"), ("gpu:h100:0", "positive integer"),
    ("tpu:v5e", "expected tpu:<chip>:<topology>"), ("tpu:v5e:big", "chips per axis")])
def test_bad_targets_are_one_line_errors(text, message):
  with pytest.raises(ValueError, match=message) as error:
    aot.parse_target(text)
  assert str(error.value).startswith(f"--target={text}") and "\n" not in str(error.value)


def test_a_topology_the_compiler_does_not_know_is_a_one_line_error():
  with pytest.raises(ValueError, match="no such tpu target") as error:
    aot.target_devices(aot.parse_target("tpu:v5e:3x7"))
  assert "\n" not in str(error.value)


def test_a_per_chip_batch_of_0_is_refused():
  with pytest.raises(ValueError, match=r"--per_chip_batch=0: expected a positive integer"):
    aot.compile_train_step(tiny_bplf(), aot.parse_target(TPU), per_chip_batch=0)


def _compile_command(*flags):
  return subprocess.run([sys.executable, "-m", "flaxflow.launch.compile", *flags],
                        capture_output=True, text=True, cwd=REPO_ROOT)


# A --config that names no file is `runs.define_config_flag`'s one-line error, the same for every
# entry point (tests/test_launch_train.py); these two are launch.compile's own, each a Python
# process that imports JAX and TensorFlow (most of this file's time).
@pytest.mark.parametrize("flags, message", [
    (["--config=launch/configs/digits_bplf.py", f"--target={TPU}", "--per_chip_batch=0"],
     "--per_chip_batch=0: expected a positive integer"),
    (["--config=launch/configs/digits_bplf.py"], "--target: expected tpu:<chip>:<topology>")])
def test_the_entry_point_gives_one_line_errors(flags, message):
  result = _compile_command(*flags)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0]


def test_an_ablation_row_is_compiled_with_the_model_launch_ablate_trains():
  from flaxflow.launch import compile as compile_entry
  from flaxflow.launch.configs import ablation_paper
  config = compile_entry.ablation_row_config(ablation_paper.get_config("mnist"), "bplf_3x3_1x1_svd")
  assert config.model.to_dict() == dict(name="bplf", image_shape=(28, 28, 1), num_classes=0,
                                        levels=2, steps_per_level=16, width=256,
                                        g_variant="3x3-1x1", svd_rank=14)
  with pytest.raises(ValueError, match=r"^--ablation_row=glow: the config has no svd_rank"):
    compile_entry.ablation_row_config(digits_bplf.get_config(), "glow")
  with pytest.raises(ValueError, match=r"^--ablation_row=nope: rows \['nope'\]: expected some of"):
    compile_entry.ablation_row_config(ablation_paper.get_config("mnist"), "nope")

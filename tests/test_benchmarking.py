"""The benchmark's FLOP counting and records, and the allocator settings, on tiny inputs."""

import json
import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from flaxflow.launch import benchmark, benchmarking, host_memory


def test_product_flops_counts_every_scan_trip_and_backward_products():
  steps, batch, features = 5, 4, 6

  def loss(weights, x):
    body = lambda h, w: (jnp.tanh(h @ w), None)
    return jnp.sum(lax.scan(body, x, weights)[0])

  weights, x = jnp.ones((steps, features, features)), jnp.ones((batch, features))
  one_product = 2 * batch * features * features
  forward = jax.make_jaxpr(loss)(weights, x).jaxpr
  assert benchmarking.product_flops(forward) == steps * one_product
  # The backward pass adds two products per step: the input's and the weight's cotangents.
  backward = jax.make_jaxpr(jax.grad(loss))(weights, x).jaxpr
  assert benchmarking.product_flops(backward) == 3 * steps * one_product


def test_product_flops_of_a_convolution():
  x, kernel = jnp.ones((2, 5, 7, 3)), jnp.ones((3, 3, 3, 4))
  convolve = lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  expected = 2 * (2 * 5 * 7 * 4) * (3 * 3 * 3)
  assert benchmarking.product_flops(jax.make_jaxpr(convolve)(x, kernel).jaxpr) == expected


def test_train_step_record_and_operation_profile(tmp_path, capsys):
  output = tmp_path / "single.json"
  benchmark.main(["--model=bplf", "--levels=1", "--steps=2", "--width=8", "--image_shape=4,4,1",
                  "--num_classes=3", "--batch_size=4", "--warmup_steps=1", "--timed_steps=2",
                  f"--profile_dir={tmp_path / 'trace'}", f"--output={output}"])
  matmul, record = json.loads(output.read_text())
  assert matmul["matmul_2048_float32_flops_per_second"] > 0
  assert record["model"]["steps_per_level"] == 2 and len(record["step_seconds"]) == 2
  assert record["images_per_second"] > 0 and np.isfinite(record["final_loss"])
  # Both counts are there. They are not ordered: XLA's cost analysis sees the scanned steps
  # once but counts every operation, and on CPU the convolutions' windows add many beside the
  # products (the jaxpr count's scan trips are checked exactly above).
  assert record["flops_per_step"] > 0 and record["xla_cost_analysis_flops_per_step"] > 0
  memory = record["memory_bytes"]
  assert memory["peak"] >= memory["peak_beyond_state_and_gradient"] > 0
  # Every profiled operation is an instruction of the step, traced back to the model's layers.
  operations = record["operation_profile"]
  times = [operation["milliseconds_per_step"] for operation in operations]
  assert operations and all(t > 0 for t in times) and times == sorted(times, reverse=True)
  assert any("BPLF.log_prob" in operation["source"] for operation in operations)
  assert any(operation["calls_per_step"] == 2 for operation in operations)  # In the scan body.
  printed = capsys.readouterr().out
  assert "XLA operations:" in printed and operations[0]["operation"] in printed


# Narrower networks than the faces configs' (the step is what is tested, not its size).
_NARROW_GANS = {
    "ifgan": dict(generator_widths=(4, 8, 8, 8), discriminator_widths=(4, 8, 8),
                  classifier_widths=(4, 8, 8), feature_size=6),
    "decgan": dict(encoder_widths=(4, 8, 8), generator_widths=(8, 8, 4),
                   discriminator_widths=(4, 8, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(benchmark.GAN_CONFIGS))
def test_a_gan_step_is_timed_as_its_faces_config_trains_it(name):
  args = benchmark.parse_args([f"--model={name}", "--batch_size=7"])
  config = benchmark.gan_config(args)
  config.model.update(_NARROW_GANS[name])
  step = benchmarking.task_train_step(config, batch_size=7)
  # Every class is in the batch (IF-GAN's average faces need each one).
  assert sorted(np.asarray(step.batch["label"]).tolist()) == list(range(7))
  before = jax.tree.map(np.array, step.state.params)
  record = step.record(step.run(2))
  assert record["model"]["name"] == name and record["batch_size"] == 7
  assert record["images_per_second"] > 0 and np.isfinite(record["final_loss"])
  assert record["flops_per_step"] > 0 and int(step.state.step) == 2
  for network, params in before.items():
    changed = jax.tree.map(lambda old, new: not np.array_equal(old, new), params,
                           step.state.params[network])
    assert all(jax.tree.leaves(changed)), f"{name}: {network} was not trained"


def test_only_the_single_suite_times_a_gan(capsys):
  with pytest.raises(SystemExit):
    benchmark.parse_args(["--model=decgan", "--suite=depth"])
  assert "--model=decgan" in capsys.readouterr().err


def test_allocator_settings_apply_exactly_where_the_c_library_is_glibc():
  assert host_memory.retain_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_peer_comparison_alternates_rounds_and_pools_their_steps(monkeypatch):
  peer_calls = []

  def fake_peer(args, model, image_shape, num_classes):
    # A peer whose steps take 2, 4, 6 ms in its three rounds.
    peer_calls.append((model, tuple(image_shape), num_classes))
    seconds = 0.002 * len(peer_calls)
    return {"framework": "peer", "step_seconds": [seconds] * 2, "load_average_1min": 0.5}

  monkeypatch.setattr(benchmark, "run_peer", fake_peer)
  args = benchmark.parse_args(["--levels=1", "--steps=2", "--width=8", "--batch_size=4",
                               "--warmup_steps=1", "--timed_steps=2", "--rounds=3"])
  ours, theirs, comparison = benchmark.compare_with_peer(args, "glow", (4, 4, 1), 3)
  assert peer_calls == [("glow", (4, 4, 1), 3)] * 3
  assert ours["model"]["name"] == "glow" and len(ours["step_seconds"]) == 6
  assert theirs["step_seconds"] == [0.002] * 2 + [0.004] * 2 + [0.006] * 2
  assert theirs["median_step_seconds"] == 0.004 and theirs["images_per_second"] == 4 / 0.004
  assert len(comparison["images_per_second_ratio_per_round"]) == 3
  assert np.isclose(comparison["images_per_second_ratio"],
                    ours["images_per_second"] / theirs["images_per_second"])


def test_benchmark_flags_reject_non_positive_counts(capsys):
  for flag in ("--timed_steps=0", "--rounds=-1", "--image_shape=32,x,3"):
    with pytest.raises(SystemExit) as exit:
      benchmark.parse_args([flag])
    assert exit.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_model_convolutions_lists_each_distinct_layer_of_the_scanned_steps():
  config = dict(name="bplf", image_shape=(8, 8, 1), num_classes=3, levels=2, steps_per_level=2,
                width=16, g_variant="3x3")
  layers = benchmarking.model_convolutions(config, batch_size=2)
  assert len({json.dumps(layer) for layer in layers}) == len(layers)
  kernels = [tuple(layer["kernel_shape"]) for layer in layers]
  # g's square hidden 3x3 at both levels (inside the scans), and the split prior's zero conv.
  assert (3, 3, 16, 16) in kernels and (3, 3, 2, 4) in kernels
  assert all(layer["strides"] == [1, 1] and layer["input_dilation"] == [1, 1] for layer in layers)


def test_conv_suite_times_both_paths_in_and_out_of_a_scan(monkeypatch, tmp_path):
  layer = dict(name="tiny transposed", input_shape=[2, 4, 4, 3], kernel_shape=[4, 4, 3, 2],
               strides=[1, 1], padding=[[2, 2], [2, 2]], input_dilation=[2, 2])
  monkeypatch.setattr(benchmark, "CONV_SUITE_MODELS", (
      dict(name="glow", image_shape=(4, 4, 1), num_classes=0, levels=1, steps_per_level=2,
           width=8),))
  monkeypatch.setattr(benchmark, "GAN_LAYERS", (layer,))
  monkeypatch.setattr(benchmark, "_run_peer_process",
                      lambda arguments: [1e-3] * len(json.load(open(
                          arguments[0].split("=", 1)[1]))))
  output = tmp_path / "conv.json"
  benchmark.main(["--suite=conv", "--batch_size=2", "--timed_steps=1", f"--output={output}"])
  records = json.loads(output.read_text())[1:]
  assert records[-1]["used_by"] == ["tiny transposed"]
  assert any("glow" in user for record in records[:-1] for user in record["used_by"])
  for record in records:
    for where in ("alone", "in_scan"):
      products, lax_time = record[f"products_{where}_seconds"], record[f"lax_{where}_seconds"]
      assert products > 0 and lax_time > 0
      assert record[f"faster_{where}"] == ("products" if products <= lax_time else "lax")
      assert np.isclose(record[f"lax_over_products_{where}"], lax_time / products)
    assert np.isclose(record["products_over_torch"], record["products_alone_seconds"] / 1e-3)


def test_torch_peers_compute_what_flaxflow_computes():
  """The torch.nn convolutions the conv suite times give lax's outputs; the BPLF has our size."""
  torch = pytest.importorskip(
      "torch", reason="the PyTorch peers need the bench extra: pip install -e \".[bench]\"")
  from flaxflow.launch import benchmark_peer
  from flaxflow import conv, models
  rng = np.random.default_rng(0)
  for layer in benchmark.GAN_LAYERS:
    small = dict(layer, input_shape=[1, 8, 8, layer["input_shape"][-1]])
    x = rng.standard_normal(small["input_shape"]).astype(np.float32)
    kernel = rng.standard_normal(small["kernel_shape"]).astype(np.float32)
    ours = conv.conv_general_dilated(jnp.asarray(x), jnp.asarray(kernel), small["strides"],
                                     small["padding"], small["input_dilation"],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    theirs = benchmark_peer.torch_convolution(small, torch.from_numpy(x).permute(0, 3, 1, 2),
                                              torch.from_numpy(kernel))
    np.testing.assert_allclose(theirs.permute(0, 2, 3, 1).numpy(), ours, rtol=1e-4, atol=1e-3)
  config = dict(name="bplf", image_shape=(8, 8, 1), num_classes=3, levels=2, steps_per_level=2,
                width=16, g_variant="3x3-1x1")
  model = models.create(config)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)),
                                                jnp.zeros(2, jnp.int32), method="log_prob"))
  peer = benchmark_peer.TorchBPLF(2, 2, 16, (8, 8, 1), 3, "3x3-1x1")
  assert (sum(p.numel() for p in peer.parameters())
          == sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])))


def test_gradient_suite_times_each_mode_in_rounds_against_the_first(tmp_path):
  output = tmp_path / "gradient.json"
  benchmark.main(["--suite=gradient", "--model=bplf", "--levels=1", "--steps=2", "--width=8",
                  "--image_shape=8,8,1", "--num_classes=3", "--batch_size=4",
                  "--gradients=plain,save_products,reversible", "--rounds=2",
                  "--warmup_steps=1", "--timed_steps=1", f"--output={output}"])
  _, *records, comparison = json.loads(output.read_text())
  assert [record["model"]["gradient"] for record in records] == [
      "plain", "save_products", "reversible"]
  assert all(len(record["step_seconds"]) == 2 for record in records)  # One median per round.
  assert comparison["step_time_ratio"]["plain"] == 1.0
  assert set(comparison["temp_memory_ratio"]) == {"plain", "save_products", "reversible"}


def test_gradient_modes_are_checked_when_parsed(capsys):
  with pytest.raises(SystemExit):
    benchmark.parse_args(["--suite=gradient", "--gradients=plain,fastest"])
  assert "fastest" in capsys.readouterr().err

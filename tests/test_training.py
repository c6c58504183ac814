"""Tests of the flow task on the training loop: optimizer, train step, non-finite skipping, EMA,
held-out metrics, samples, and whole runs."""

import functools
import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flaxflow import analysis, checkpointing, loop, objectives, optimization, parallel
from flaxflow.tasks import flow
from flaxflow.workdir import Workdir
from tiny_models import build
from training_helpers import ArrayIterator, RecordingWriter

ONE_LEVEL = dict(levels=1, width=4, num_classes=3)  # Every model class-conditional.


def toy_dataset(num_examples=96, num_classes=3, seed=0):
  """uint8 images whose brightness depends on the class."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
  centre = 60 + 60 * labels[:, None, None, None]
  noise = rng.normal(0, 20, (num_examples, 4, 4, 1))
  return np.clip(centre + noise, 0, 255).astype(np.uint8), labels


def toy_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      seed=0, n_bits=8, batch_size=16, eval_batch_size=16, num_steps=12, class_loss_weight=0.3,
      ema_decay=0.0,
      optimizer=dict(name="adam", learning_rate=0.05, warmup_steps=2, schedule="constant",
                     grad_clip_norm=10.0, b1=0.9, b2=0.999, eps=1e-8),
      log_every=1, checkpoint_every=4, keep_checkpoints=3, sample_every=0, samples_per_class=2,
      sample_temperature=1.0, eval_every=0, max_consecutive_nonfinite=5))
  config.update_from_flattened_dict(overrides)
  return config


def run_toy(workdir, config, images=None, labels=None, model_name="bplf"):
  if images is None:
    images, labels = toy_dataset()
  mesh = parallel.make_mesh()
  iterator = ArrayIterator(images, labels, global_batch_size=config.batch_size,
                           sharding=parallel.batch_sharding(mesh))
  writer = RecordingWriter()
  eval_images, eval_labels = toy_dataset(num_examples=32, seed=1)
  eval_batches = lambda: ({"image": eval_images[i:i + 16], "label": eval_labels[i:i + 16]}
                          for i in (0, 16))
  task = flow.FlowTask(config, build(model_name, **ONE_LEVEL), mesh, ["a", "b", "c"], eval_batches)
  result = loop.train(task, config, train_iterator=iterator, workdir=Workdir(str(workdir)),
                      writer=writer, mesh=mesh)
  return result, writer


def train_losses(writer):
  return [writer.scalars[step]["train/loss"] for step in sorted(writer.scalars)
          if "train/loss" in writer.scalars[step]]


def test_learning_rate_warms_up_linearly_then_decays():
  optimizer_config = toy_config(**{"optimizer.schedule": "cosine", "optimizer.warmup_steps": 10,
                                   "optimizer.learning_rate": 1.0}).optimizer
  schedule = optimization.learning_rate_schedule(optimizer_config, num_steps=110)
  assert schedule(0) == 0.0
  np.testing.assert_allclose(schedule(5), 0.5)
  np.testing.assert_allclose(schedule(10), 1.0)
  np.testing.assert_allclose(schedule(60), 0.5, atol=1e-6)
  np.testing.assert_allclose(schedule(110), 0.0, atol=1e-6)


def test_staircase_schedule_decays_every_so_many_epochs():
  optimizer_config = toy_config(**{"optimizer.warmup_steps": 0}).optimizer
  optimizer_config.update(dict(schedule="staircase", learning_rate=1.0, decay_rate=0.9,
                               decay_every_epochs=10))
  schedule = optimization.learning_rate_schedule(optimizer_config, num_steps=1000,
                                                 steps_per_epoch=5)
  np.testing.assert_allclose([schedule(0), schedule(49), schedule(50), schedule(120)],
                             [1.0, 1.0, 0.9, 0.81], rtol=1e-6)
  with pytest.raises(ValueError, match="steps per epoch"):
    optimization.learning_rate_schedule(optimizer_config, num_steps=1000)


def test_weight_decay_adds_the_parameters_to_the_gradient_before_adam():
  config = toy_config(**{"optimizer.warmup_steps": 0, "optimizer.grad_clip_norm": 0.0,
                         "optimizer.learning_rate": 0.1})
  config.optimizer.weight_decay = 0.5
  optimizer = optimization.make_optimizer(config.optimizer, num_steps=10)
  params = {"w": jnp.array([2.0, -2.0, 0.0])}
  updates, _ = optimizer.update({"w": jnp.array([-1.0, 0.0, 0.0])}, optimizer.init(params),
                                params)
  # Gradients plus 0.5 * w: (0, -1, 0); Adam's first step moves each non-zero one by lr.
  np.testing.assert_allclose(updates["w"], [0.0, 0.1, 0.0], atol=1e-6)


@pytest.mark.parametrize("field, value", [("optimizer.name", "sgd"),
                                          ("optimizer.schedule", "linear")])
def test_unknown_optimizer_settings_are_named_in_the_error(field, value):
  with pytest.raises(ValueError, match=field):
    optimization.make_optimizer(toy_config(**{field: value}).optimizer, num_steps=10)


def test_gradient_clipping_bounds_the_first_adamax_step():
  config = toy_config(**{"optimizer.name": "adamax", "optimizer.warmup_steps": 0,
                         "optimizer.learning_rate": 0.1, "optimizer.grad_clip_norm": 1.0})
  optimizer = optimization.make_optimizer(config.optimizer, num_steps=10)
  params = {"w": jnp.zeros(3)}
  updates, _ = optimizer.update({"w": jnp.array([300.0, -400.0, 0.0])}, optimizer.init(params),
                                params)
  # Adamax's first step moves every coordinate with a non-zero gradient by exactly lr.
  np.testing.assert_allclose(updates["w"], [-0.1, 0.1, 0.0], atol=1e-6)


def _fresh_state(config, model_name="bplf"):
  model = build(model_name, **ONE_LEVEL)
  images, labels = toy_dataset(num_examples=config.batch_size)
  optimizer = optimization.make_optimizer(config.optimizer, config.num_steps)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  init = jax.jit(functools.partial(flow.create_train_state, model, optimizer,
                                   n_bits=config.n_bits, use_ema=config.ema_decay > 0))
  return model, optimizer, batch, init(batch, jax.random.PRNGKey(0))


def _step_fn(config, model, optimizer, loss_fn=None):
  return jax.jit(functools.partial(flow.train_step, model=model, optimizer=optimizer,
                                   loss_fn=loss_fn or flow.make_loss_fn(config),
                                   rng=jax.random.PRNGKey(1), ema_decay=config.ema_decay))


def nan_loss(model, variables, images, labels, rng):
  """The usual loss times NaN: a batch whose loss and gradient are not finite."""
  loss, metrics = objectives.loss_and_metrics(model, variables, images, labels, rng)
  return loss * jnp.nan, metrics


def test_train_state_keeps_constants_out_of_the_optimizer():
  config = toy_config()
  model, optimizer, batch, state = _fresh_state(config)
  assert set(state.fixed_variables) == {"constants"} and state.ema_params is None
  params_leaves = {id(leaf) for leaf in jax.tree.leaves(state.params)}
  assert not params_leaves & {id(leaf) for leaf in jax.tree.leaves(state.fixed_variables)}
  new_state, _ = _step_fn(config, model, optimizer)(state, batch)
  jax.tree.map(np.testing.assert_array_equal, new_state.fixed_variables, state.fixed_variables)
  assert jax.tree.structure(new_state.opt_state) == jax.tree.structure(state.opt_state)


def test_train_step_lowers_the_loss_and_counts_steps():
  config = toy_config()
  model, optimizer, batch, state = _fresh_state(config)
  step = _step_fn(config, model, optimizer)
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 20 and int(state.skips.total) == 0
  assert losses[-1] < losses[0] - 0.5


def test_non_finite_batch_skips_the_update_and_is_counted():
  config = toy_config(ema_decay=0.9)
  model, optimizer, batch, state = _fresh_state(config)
  step, nan_step = _step_fn(config, model, optimizer), _step_fn(config, model, optimizer, nan_loss)
  state, _ = step(state, batch)
  after, metrics = nan_step(state, batch)
  assert int(metrics["skipped"]) == 1
  assert int(after.step) == int(state.step) + 1
  assert int(after.skips.total) == 1 and int(after.skips.consecutive) == 1
  for kept, original in [(after.params, state.params), (after.opt_state, state.opt_state),
                         (after.ema_params, state.ema_params)]:
    jax.tree.map(np.testing.assert_array_equal, kept, original)
  twice, _ = nan_step(after, batch)
  assert int(twice.skips.consecutive) == 2
  recovered, metrics = step(twice, batch)
  assert int(metrics["skipped"]) == 0 and int(recovered.skips.consecutive) == 0
  assert int(recovered.skips.total) == 2


def test_ema_follows_the_parameters():
  config = toy_config(ema_decay=0.5)
  model, optimizer, batch, state = _fresh_state(config)
  train_step = _step_fn(config, model, optimizer)
  for step, decay in [(0, 0.1), (20, 0.5)]:  # 0.1 = (1 + 0) / (10 + 0): early steps forget faster.
    state = state.replace(step=jnp.int32(step))
    new_state, _ = train_step(state, batch)
    expected = jax.tree.map(lambda old, new, decay=decay: decay * old + (1 - decay) * new,
                            state.ema_params, new_state.params)
    jax.tree.map(lambda actual, wanted: np.testing.assert_allclose(actual, wanted, rtol=1e-6),
                 new_state.ema_params, expected)
    state = new_state
  assert new_state.variables(use_ema=True)["params"] is new_state.ema_params


@pytest.mark.parametrize("model_name", ["bplf", "classifier"])
def test_evaluate_averages_per_example_metrics_over_real_examples_only(model_name):
  config = toy_config()
  model, _, _, state = _fresh_state(config, model_name)
  images, labels = toy_dataset(num_examples=40, seed=3)
  mask = np.arange(40) < 37  # The last batch is padded, as data.pipeline.eval_batches pads it.
  loss_fn = flow.make_loss_fn(config)
  variables = state.variables()
  mesh = parallel.make_mesh()
  batches = [{"image": images[i:i + 20], "label": labels[i:i + 20], "mask": mask[i:i + 20]}
             for i in (0, 20)]
  rng = jax.random.PRNGKey(0)
  metrics = analysis.mean_example_metrics(model, variables, batches, loss_fn=loss_fn, mesh=mesh,
                                       rng=rng)
  example_rngs = np.concatenate([jax.random.split(jax.random.fold_in(rng, index), 20)
                                 for index in range(2)])
  example_metrics = jax.jit(lambda image, label, key: loss_fn(model, variables, image, label,
                                                               key)[1])
  per_example = [example_metrics(images[i:i + 1], labels[i:i + 1], example_rngs[i])
                 for i in range(37)]
  assert set(metrics) == set(per_example[0])
  for name in metrics:
    np.testing.assert_allclose(metrics[name], np.mean([float(m[name]) for m in per_example]),
                               rtol=1e-5)
  unmasked = [{"image": images[:20], "label": labels[:20]}]
  assert analysis.mean_example_metrics(model, variables, unmasked, loss_fn=loss_fn, mesh=mesh,
                                       rng=rng)
  with pytest.raises(ValueError, match="no examples"):
    analysis.mean_example_metrics(model, variables, [], loss_fn=loss_fn, mesh=mesh, rng=rng)


def test_sample_grid_has_one_row_per_class():
  config = toy_config()
  model, _, _, state = _fresh_state(config)
  grid = analysis.sample_grid(model, state.variables(), jax.random.PRNGKey(0), samples_per_class=5,
                              temperature=0.5, n_bits=8, mesh=parallel.make_mesh())
  assert grid.shape == (3, 5, 4, 4, 1) and grid.dtype == np.uint8


@pytest.mark.slow
def test_train_loop_writes_checkpoints_samples_metrics_and_resumes_where_it_stopped(tmp_path):
  config = toy_config(sample_every=6)
  result, writer = run_toy(tmp_path / "full", config)
  assert not result.stopped_early and int(result.state.step) == 12
  losses = train_losses(writer)
  assert len(losses) == 12 and losses[-1] < losses[0]
  assert sorted(os.listdir(tmp_path / "full" / "samples")) == ["step_0000006.png",
                                                                "step_0000012.png"]
  final = json.loads((tmp_path / "full" / "final_metrics.json").read_text())
  # A class-conditional model names both likelihoods: p(x | y_true) and the marginal p(x).
  assert final["step"] == 12 and set(final["eval"]) == {"loss", "bits_per_dim_given_label",
                                                        "bits_per_dim", "accuracy"}
  assert "bits_per_dim_given_label" in final["train"] and "bits_per_dim" not in final["train"]
  assert writer.scalars[12]["eval/bits_per_dim"] == final["eval"]["bits_per_dim"]
  # log p(x) >= log p(x | y) + log p(y), p(y) = 1/3: the marginal costs at most log2(3)/D more.
  given_label = final["eval"]["bits_per_dim_given_label"]
  assert final["eval"]["bits_per_dim"] <= given_label + np.log2(3) / 16
  manager = checkpointing.create_manager(str(tmp_path / "full" / "checkpoints"),
                                         save_interval_steps=4)
  assert manager.all_steps() == [4, 8, 12]

  # The same run in two parts: 7 steps, then resume to 12 from the checkpoint of step 4 (the
  # checkpoints after step 4 are removed, as if the first part died before writing them).
  config_part = toy_config(num_steps=7)
  run_toy(tmp_path / "parts", config_part)
  first = checkpointing.create_manager(str(tmp_path / "parts" / "checkpoints"),
                                       save_interval_steps=4)
  assert first.all_steps() == [4, 7]
  first.delete(7)
  first.close()
  resumed, resumed_writer = run_toy(tmp_path / "parts", config)
  np.testing.assert_allclose(train_losses(resumed_writer), losses[4:], rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, resumed.state.params, result.state.params)
  assert resumed.eval_metrics == result.eval_metrics


def test_an_update_that_would_make_the_parameters_non_finite_is_skipped():
  params = {"w": jnp.ones(3)}
  optimizer = optax.sgd(float("nan"))  # Loss and gradient finite, the update NaN.
  grads = {"w": jnp.full(3, 0.5)}
  kept, opt_state, skips, metrics = optimization.apply_if_finite(
      optimizer, params, optimizer.init(params), grads, jnp.float32(1.0),
      optimization.SkipCount.zero())
  assert int(metrics["skipped"]) == 1 and int(skips.consecutive) == 1
  np.testing.assert_array_equal(kept["w"], params["w"])
  updated, _, skips, metrics = optimization.apply_if_finite(
      optax.sgd(1.0), params, opt_state, grads, jnp.float32(1.0), skips)
  assert int(metrics["skipped"]) == 0 and int(skips.consecutive) == 0
  np.testing.assert_allclose(updated["w"], 0.5)


def _all_finite(tree):
  return all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(leaf).dtype, np.inexact))


@pytest.mark.slow
def test_a_diverged_run_keeps_its_last_good_checkpoint_and_a_sane_rerun_finishes(tmp_path):
  sane = {"optimizer.warmup_steps": 0}
  run_toy(tmp_path, toy_config(num_steps=4, **sane))
  diverging = toy_config(num_steps=40, max_consecutive_nonfinite=3,
                         **{"optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 0})
  with pytest.raises(loop.NonFiniteError, match=r"^training diverged: .*max_consecutive_"
                     r"nonfinite=3.*the last checkpoint, of step 4 in .*checkpoints, is healthy"):
    run_toy(tmp_path, diverging)
  manager = checkpointing.create_manager(str(tmp_path / "checkpoints"), save_interval_steps=4)
  assert manager.all_steps() == [4]  # Steps 8, ... came during the skipped streak.
  replicated = parallel.replicated_sharding(parallel.make_mesh())
  abstract_state = checkpointing.abstract_state(lambda: _fresh_state(diverging)[3], replicated)
  state, _ = checkpointing.restore(manager, abstract_state)
  manager.close()
  assert _all_finite(state) and int(state.skips.consecutive) == 0
  resumed, _ = run_toy(tmp_path, toy_config(num_steps=12, **sane))
  assert int(resumed.state.step) == 12 and _all_finite(resumed.state.params)
  assert np.isfinite(resumed.eval_metrics["bits_per_dim"])


@pytest.mark.parametrize("field, value, expected", [
    ("optimizer.learning_rate", float("nan"), "a finite number > 0"),
    ("optimizer.learning_rate", float("inf"), "a finite number > 0"),
    ("optimizer.learning_rate", 0.0, "a finite number > 0"),
    ("optimizer.warmup_steps", -1, "an integer >= 0"),
    ("keep_checkpoints", 0, "a positive integer"),
    ("log_every", 0, "a positive integer"),
    ("checkpoint_every", 0, "a positive integer"),
    ("num_steps", -5, "a positive integer"),
    ("max_consecutive_nonfinite", 0, "a positive integer"),
    ("sample_every", -1, "an integer >= 0"),
    ("eval_batch_size", 0, "a positive integer"),
    ("ema_decay", 1.0, r"a number in \[0, 1\)"),
])
def test_bad_numbers_are_refused_up_front_with_the_field_name(tmp_path, field, value, expected):
  config = toy_config(**{field: value})
  with pytest.raises(ValueError, match=rf"^--config\.{field}={value!r}: expected {expected}"):
    run_toy(tmp_path, config)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_keep_checkpoints_none_keeps_every_checkpoint(tmp_path):
  run_toy(tmp_path, toy_config(keep_checkpoints=None))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["12", "4", "8"]


def test_an_eval_batch_that_the_devices_cannot_share_is_refused():
  four_devices = types.SimpleNamespace(size=4)  # Only the mesh's size matters here.
  flow.check_eval_batch_size(toy_config(eval_batch_size=8), four_devices)
  with pytest.raises(ValueError, match=r"^--config.eval_batch_size=6: expected a multiple of the "
                     r"4 devices of each process$"):
    flow.check_eval_batch_size(toy_config(eval_batch_size=6), four_devices)

"""The training loop is generic: a two-network adversarial toy on 2-D points, with an optimizer per
network and extra state (a history of generated points), trains through `flaxflow.loop.train`
with resume and per-optimizer non-finite skipping, and no flow code. A one-parameter toy whose
loss is defined only on (-1, 1) diverges as a too-high learning rate makes a flow diverge."""


import json
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flaxflow import checkpointing, loop, optimization, parallel
from flaxflow.gan import adversarial
from flaxflow.workdir import Workdir
from training_helpers import ArrayIterator, RecordingWriter

NETWORKS = ("generator", "discriminator")
HISTORY = 8  # Generated points kept in the state.


class Mlp(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.features)(jnp.tanh(nn.Dense(8)(x)))


class AdversarialToy:
  """A GAN on 2-D points: batches are {"image": (B, 2) real points, "label": unused}; the state's
  `extra` is a history of generated points that the discriminator also sees, as image-history
  GANs do."""

  def __init__(self, learning_rate: float):
    self.networks = {"generator": Mlp(2), "discriminator": Mlp(1)}
    self.optimizers = {name: optax.adam(learning_rate) for name in NETWORKS}

  def init_state(self, batch, rng):
    points = jnp.zeros_like(batch["image"], jnp.float32)
    params = {name: self.networks[name].init(jax.random.fold_in(rng, index), points)["params"]
              for index, name in enumerate(NETWORKS)}
    return adversarial.init_state(params, self.optimizers,
                                  extra=jnp.zeros((HISTORY, 2), jnp.float32))

  def _generate(self, params, rng, count):
    return self.networks["generator"].apply({"params": params},
                                            jax.random.normal(rng, (count, 2)))

  def _logits(self, params, points):
    return self.networks["discriminator"].apply({"params": params}, points)[:, 0]

  def train_step(self, state, batch, rng):
    real = batch["image"].astype(jnp.float32)
    noise_rng = jax.random.fold_in(rng, state.step)
    fake = self._generate(state.params["generator"], noise_rng, real.shape[0])

    def discriminator_loss(params):
      fakes = jnp.concatenate([jax.lax.stop_gradient(fake), state.extra])
      loss = adversarial.discriminator_loss(self._logits(params["discriminator"], real),
                                            self._logits(params["discriminator"], fakes))
      return loss, {"loss/discriminator": loss}

    def generator_loss(params):
      points = self._generate(params["generator"], noise_rng, real.shape[0])
      loss = adversarial.generator_loss(self._logits(state.params["discriminator"], points))
      return loss, {"loss/generator": loss}

    state, d_loss, d_metrics = adversarial.update_networks(state, ["discriminator"],
                                                           discriminator_loss, self.optimizers)
    state, g_loss, g_metrics = adversarial.update_networks(state, ["generator"],
                                                           generator_loss, self.optimizers)
    state = state.replace(step=state.step + 1,
                          extra=jnp.concatenate([fake[:HISTORY // 2], state.extra])[:HISTORY])
    return state, adversarial.step_metrics(state, {"loss": d_loss + g_loss, **d_metrics,
                                                   **g_metrics})

  def learning_rates(self, step):
    return {}

  def periodic_actions(self, workdir, writer):
    return []

  def final_evaluation(self, state, workdir, writer):
    return {}


def toy_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      seed=0, batch_size=8, num_steps=12, log_every=1, checkpoint_every=4, keep_checkpoints=5,
      max_consecutive_nonfinite=3))
  config.update(overrides)
  return config


def real_points(nan_rows=()):
  """Points on a ring; rows of `nan_rows` are NaN (a corrupt record)."""
  angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 64)
  points = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
  points[list(nan_rows)] = np.nan
  return points


def run(workdir, config, points, task=None, iterator_class=ArrayIterator, **iterator_options):
  mesh = parallel.make_mesh()
  iterator = iterator_class(points, np.zeros(len(points), np.int32),
                            global_batch_size=config.batch_size,
                            sharding=parallel.batch_sharding(mesh), **iterator_options)
  writer = RecordingWriter()
  result = loop.train(task or AdversarialToy(learning_rate=0.05), config,
                      train_iterator=iterator, workdir=Workdir(str(workdir)), writer=writer,
                      mesh=mesh)
  return result, writer


def saved_steps(workdir):
  return sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())


def test_an_adversarial_toy_resumes_where_it_stopped(tmp_path):
  full, full_writer = run(tmp_path / "full", toy_config(), real_points())
  assert int(full.state.step) == 12
  run(tmp_path / "parts", toy_config(num_steps=7), real_points())
  part = checkpointing.create_manager(str(tmp_path / "parts" / "checkpoints"),
                                      save_interval_steps=4)
  assert part.all_steps() == [4, 7]
  part.delete(7)
  part.close()
  resumed, resumed_writer = run(tmp_path / "parts", toy_config(), real_points())
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  for step in range(5, 13):
    np.testing.assert_allclose(resumed_writer.scalars[step]["train/loss"],
                               full_writer.scalars[step]["train/loss"], rtol=1e-6)


def test_a_non_finite_loss_skips_only_its_own_network(tmp_path):
  # The real points of both steps' batches are NaN: the discriminator's loss is not finite, while
  # the generator's (which sees no real points) is. The next batch, which the last state's health
  # is read on, is clean.
  config = toy_config(num_steps=2, max_consecutive_nonfinite=5)
  clean, _ = run(tmp_path / "clean", config, real_points())
  corrupt, writer = run(tmp_path / "corrupt", config, real_points(), nan_batches=(0, 1))
  initial = AdversarialToy(learning_rate=0.05).init_state(
      {"image": jnp.zeros((8, 2))}, loop.stream_key(config.seed, "init"))
  jax.tree.map(np.testing.assert_array_equal, corrupt.state.params["discriminator"],
               initial.params["discriminator"])
  assert int(corrupt.state.skips["discriminator"].total) == 2
  assert int(corrupt.state.skips["generator"].total) == 0
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                         corrupt.state.params["generator"], initial.params["generator"])
  assert all(jax.tree.leaves(changed))
  assert writer.scalars[2]["train/skipped/discriminator"] == 1
  assert writer.scalars[2]["train/skipped/generator"] == 0
  assert int(clean.state.skips["discriminator"].total) == 0


def test_too_many_skips_in_a_row_stop_the_run(tmp_path):
  config = toy_config(num_steps=10, max_consecutive_nonfinite=3)
  try:
    run(tmp_path, config, real_points(nan_rows=range(64)))
  except loop.NonFiniteError as error:
    assert "max_consecutive_nonfinite=3" in str(error)
  else:
    raise AssertionError("the run did not stop")


def test_a_save_that_falls_on_a_skipped_update_waits_for_the_next_healthy_state(tmp_path):
  # The 5th batch is corrupt: the step from the state of step 4 skips the discriminator's update,
  # so that state is not saved; the state after that step is healthy and is saved instead, and
  # the run keeps its interval.
  result, _ = run(tmp_path, toy_config(), real_points(), nan_batches=(4,))
  assert int(result.state.skips["discriminator"].total) == 1
  assert saved_steps(tmp_path) == [5, 8, 12]
  assert (tmp_path / "final_metrics.json").exists()


class ToyWithALimitedParameter:
  """One parameter w with loss -log(1 - w^2) - w, defined only on (-1, 1), trained by SGD whose
  learning rate warms up from 0 over two steps. From w = 0 the second step moves w by the
  learning rate: a high one throws it out of (-1, 1) by a finite update, and every later loss is
  NaN, as a too-high learning rate wrecks a flow; a low one converges to w = (sqrt(2) - 1)."""

  def __init__(self, learning_rate: float):
    self.optimizer = optax.sgd(optax.linear_schedule(0.0, learning_rate, 2))

  def loss(self, w):
    return -jnp.log(1 - w ** 2) - w

  def init_state(self, batch, rng):
    w = jnp.zeros((), jnp.float32)
    return adversarial.init_state({"w": w}, {"w": self.optimizer})

  def train_step(self, state, batch, rng):
    loss, grad = jax.value_and_grad(self.loss)(state.params["w"])
    w, opt_state, skips, update = optimization.apply_if_finite(
        self.optimizer, state.params["w"], state.opt_states["w"], grad, loss, state.skips["w"])
    state = state.replace(step=state.step + 1, params={"w": w}, opt_states={"w": opt_state},
                          skips={"w": skips})
    return state, adversarial.step_metrics(state, {"loss": loss, "skipped/w": update["skipped"]})

  def learning_rates(self, step):
    return {}

  def periodic_actions(self, workdir, writer):
    return []

  def final_evaluation(self, state, workdir, writer):
    return {"loss": float(self.loss(state.params["w"]))}


def test_a_diverged_run_resumes_from_its_last_healthy_state_with_a_lower_learning_rate(tmp_path):
  config = toy_config(num_steps=20, checkpoint_every=1, max_consecutive_nonfinite=3)
  with pytest.raises(loop.NonFiniteError) as diverged:
    run(tmp_path, config, real_points(), ToyWithALimitedParameter(learning_rate=1e3))
  # Step 2's update was finite and wrecked w; the state it left is never saved.
  assert saved_steps(tmp_path) == [1]
  assert str(diverged.value).startswith("training diverged: the updates at steps 3..5 were skipped")
  assert "the last checkpoint, of step 1 in " in str(diverged.value)
  result, writer = run(tmp_path, config, real_points(), ToyWithALimitedParameter(learning_rate=0.1))
  assert min(writer.scalars) == 2  # Resumed from step 1.
  assert float(result.state.params["w"]) == pytest.approx(np.sqrt(2) - 1, abs=1e-3)
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert np.isfinite(final["eval"]["loss"]) and final["step"] == 20


class SigtermAtBatch(ArrayIterator):
  """Sends this process SIGTERM as the batch numbered `sigterm_batch` is first drawn."""

  def __init__(self, *args, sigterm_batch, **kwargs):
    super().__init__(*args, **kwargs)
    self.sigterm_batch = sigterm_batch

  def __next__(self):
    if self.batches_drawn == self.sigterm_batch:
      self.sigterm_batch = None
      os.kill(os.getpid(), signal.SIGTERM)
    return super().__next__()


class ToyStoppedInItsFinalEvaluation(AdversarialToy):
  def final_evaluation(self, state, workdir, writer):
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("the final evaluation went on after SIGTERM")


def test_sigterm_at_the_last_step_or_in_the_final_evaluation_then_rerun_ends_as_uninterrupted(
    tmp_path):
  config = toy_config(num_steps=6)
  run(tmp_path / "reference", config, real_points())
  reference = json.loads((tmp_path / "reference" / "final_metrics.json").read_text())

  at_last_step = tmp_path / "at_last_step"
  result, _ = run(at_last_step, config, real_points(), iterator_class=SigtermAtBatch,
                  sigterm_batch=5)
  assert result.stopped_early and saved_steps(at_last_step) == [4, 6]
  assert not (at_last_step / "final_metrics.json").exists()

  in_evaluation = tmp_path / "in_evaluation"
  with pytest.raises(checkpointing.Preempted), checkpointing.preempt_on_sigterm():
    run(in_evaluation, config, real_points(), ToyStoppedInItsFinalEvaluation(learning_rate=0.05))
  assert not (in_evaluation / "final_metrics.json").exists()

  for workdir in (at_last_step, in_evaluation):
    result, writer = run(workdir, config, real_points())
    assert not result.stopped_early and not writer.scalars  # No step ran again.
    final = json.loads((workdir / "final_metrics.json").read_text())
    for metrics in (final, reference):
      metrics["train"].pop("images_per_second", None)
    assert final == reference


class ToyWithNanEvaluation(AdversarialToy):
  def final_evaluation(self, state, workdir, writer):
    return {"loss": float("nan")}


def test_non_finite_final_metrics_are_strict_json_null_and_an_error(tmp_path):
  mesh = parallel.make_mesh()
  config = toy_config(num_steps=4)
  iterator = ArrayIterator(real_points(), np.zeros(64, np.int32), global_batch_size=8,
                           sharding=parallel.batch_sharding(mesh))
  try:
    loop.train(ToyWithNanEvaluation(learning_rate=0.05), config, train_iterator=iterator,
               workdir=Workdir(str(tmp_path)), writer=RecordingWriter(), mesh=mesh)
  except loop.NonFiniteError as error:
    assert "eval/loss are not finite" in str(error)
  else:
    raise AssertionError("non-finite final metrics passed")
  text = (tmp_path / "final_metrics.json").read_text()
  assert json.loads(text, parse_constant=lambda name: 1 / 0)["eval"] == {"loss": None}
  with pytest.raises(loop.NonFiniteError, match="the final metrics eval/loss are not finite"):
    run(tmp_path, config, real_points())  # A rerun of the finished run says it again.


def test_a_rerun_of_a_finished_run_keeps_its_final_metrics(tmp_path):
  run(tmp_path, toy_config(num_steps=4), real_points())
  before = (tmp_path / "final_metrics.json").read_text()
  assert json.loads(before)["train"]
  result, writer = run(tmp_path, toy_config(num_steps=4), real_points())
  assert int(result.state.step) == 4 and not writer.scalars
  assert (tmp_path / "final_metrics.json").read_text() == before


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  full, _ = run(tmp_path / "full", toy_config(), real_points())
  run(tmp_path / "parts", toy_config(num_steps=8), real_points())
  latest = tmp_path / "parts" / "checkpoints" / "8"
  largest = max((path for path in latest.rglob("*") if path.is_file()),
                key=lambda path: path.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:largest.stat().st_size // 2])
  resumed, writer = run(tmp_path / "parts", toy_config(), real_points())
  assert min(writer.scalars) == 5  # Resumed from step 4.
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  assert sorted(path.name for path in latest.parent.iterdir()) == ["12", "4", "8",
                                                                  "unreadable_8"]

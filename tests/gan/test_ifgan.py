"""IF-GAN's networks, island loss and task: shapes, pure state, attention, the train step, resume,
evaluation through the shared tools, and the data-parallel step."""

import functools
import os
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flaxflow import analysis, conv, loop, objectives, parallel, tasks
from flaxflow.analysis import batches as batches_lib
from flaxflow.gan import ifgan, pixels
from flaxflow.tasks import ifgan as ifgan_task
from flaxflow.workdir import Workdir
from training_helpers import (ArrayIterator, RecordingWriter, run_on_simulated_devices,
                              stopped_copy)

SIDE, CLASSES = 16, 3
CLASS_NAMES = ("a", "b", "c")


def tiny_config(**overrides):
  """An IF-GAN on 16x16 images of 3 classes, a few channels per layer."""
  config = ml_collections.ConfigDict(dict(
      dataset="toy", eval_split="test", seed=0, batch_size=8, eval_batch_size=8, num_steps=4,
      log_every=1, checkpoint_every=2, keep_checkpoints=5, max_consecutive_nonfinite=3,
      sample_every=0, samples_per_class=2, eval_every=0, target_face="class_pixel_mean",
      optimizer=dict(name="adam", learning_rate=1e-3, warmup_steps=0, schedule="staircase",
                     decay_rate=0.9, decay_every_epochs=10, weight_decay=1e-4,
                     grad_clip_norm=0.0, b1=0.9, b2=0.99, eps=1e-8),
      loss=dict(adversarial="non_saturating", gan_weight=1.0, l1_weight=20.0,
                softmax_weight=10.0, island_weight=1.0, island_alpha=0.03,
                centre_learning_rate=0.5, classifier_real_pair=True,
                classifier_trains_generator=True),
      model=dict(name="ifgan", image_shape=(SIDE, SIDE, 1), num_classes=CLASSES,
                 generator_widths=(4, 8, 8), attention=True, attention_encoder=1,
                 attention_skip=0, attention_decoder=0, discriminator_widths=(4, 8),
                 classifier_kind="cnn", classifier_widths=(4, 8), stage_sizes=(1, 1),
                 resnet_width=4, feature_size=6, norm="instance")))
  for field, value in overrides.items():
    target = config
    *parents, name = field.split(".")
    for parent in parents:
      target = target[parent]
    target[name] = value
  return config


def baseline_config():
  """`tiny_config` with E alone."""
  config = tiny_config()
  config.model = ml_collections.ConfigDict(dict(
      name="expression_baseline", image_shape=(SIDE, SIDE, 1), num_classes=CLASSES,
      classifier_kind="cnn", classifier_widths=(4, 8), feature_size=6))
  return config


def toy_examples(count=48, seed=0):
  """Faces of a sort: a bright square whose position is the class, on a noisy background."""
  rng = np.random.default_rng(seed)
  labels = (np.arange(count) % CLASSES).astype(np.int32)
  images = rng.integers(0, 80, (count, SIDE, SIDE, 1))
  for index, label in enumerate(labels):
    images[index, 2 + 4 * label:6 + 4 * label, 4:12] += 150
  return {"image": images.astype(np.uint8), "label": labels}


def make_task(config, examples=None, mesh=None):
  examples = toy_examples() if examples is None else examples
  mesh = parallel.make_mesh() if mesh is None else mesh
  return ifgan_task.create_task(
      config, mesh, image_shape=(SIDE, SIDE, 1), class_names=CLASS_NAMES,
      eval_batches=lambda: batches_lib.array_batches(examples, config.eval_batch_size),
      train_batches=lambda: batches_lib.array_batches(examples, 16))


def first_batch(examples, size=8):
  return {"image": jnp.asarray(examples["image"][:size]),
          "label": jnp.asarray(examples["label"][:size])}


def gammas(params):
  return {"/".join(str(getattr(key, "key", key)) for key in path): float(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if getattr(path[-1], "key", None) == "gamma"}


def test_networks_have_the_shapes_and_only_parameters():
  model = ifgan_task.create_model(tiny_config().model)
  x = jnp.zeros((2, SIDE, SIDE, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert set(variables) == {"params"}  # No batch statistics: the state is pure.
  assert set(variables["params"]) == {"generator", "discriminator", "classifier"}
  generated = model.apply(variables, x, method="generate")
  assert generated.shape == x.shape and float(jnp.abs(generated).max()) <= 1
  assert model.apply(variables, x, generated, method="discriminate").shape == (2, 4, 4)
  logits, features = model.apply(variables, x, generated, method="classify")
  assert logits.shape == (2, CLASSES) and features.shape == (2, 6)
  assert model.apply(variables, x, method="class_logits").shape == (2, CLASSES)
  assert len(gammas(variables["params"])) == 3
  without = ifgan_task.create_model(tiny_config(**{"model.attention": False}).model)
  assert not gammas(without.init(jax.random.PRNGKey(0), x)["params"])


def test_the_resnet_classifier_and_group_norm_build():
  config = tiny_config(**{"model.classifier_kind": "resnet", "model.norm": "group"})
  model = ifgan_task.create_model(config.model)
  x = jnp.ones((2, SIDE, SIDE, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits, features = model.apply(variables, x, x, method="classify")
  assert logits.shape == (2, CLASSES) and features.shape == (2, 6)


def test_self_attention_with_gamma_zero_is_the_identity_and_not_otherwise():
  module = ifgan.SelfAttention()
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 16))
  variables = module.init(jax.random.PRNGKey(2), x)
  assert float(variables["params"]["gamma"]) == 0.0
  np.testing.assert_array_equal(module.apply(variables, x), x)
  moved = jax.tree.map(lambda leaf: leaf, variables)
  moved["params"]["gamma"] = jnp.array(0.5)
  assert float(jnp.abs(module.apply(moved, x) - x).max()) > 1e-3


def test_island_loss_against_hand_computed_values():
  features = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  labels = jnp.array([0, 1, 0])
  # Pull: (0 + 1 + 1) / 3. Orthogonal centres: each ordered pair gives cos + 1 = 1.
  two = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  np.testing.assert_allclose(ifgan.island_loss(features, labels, two, 0.03),
                             2 / 3 + 0.03 * 2, rtol=1e-6)
  # A third centre at 45 degrees to both: 2 * ((0 + 1) + 2 * (1 / sqrt(2) + 1)).
  three = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
  np.testing.assert_allclose(ifgan.island_loss(features, labels, three, 0.03),
                             2 / 3 + 0.03 * (6 + 2 * np.sqrt(2)), rtol=1e-6)


def test_the_paper_s_targets_are_the_per_class_pixel_means_of_the_training_split():
  examples = toy_examples(count=10)
  split = ifgan_task.summarize_training_split(
      batches_lib.array_batches(examples, 4), CLASS_NAMES, per_class=2)
  averages, grid, count = split.pixel_means, split.grid_images, split.num_examples
  np.testing.assert_array_equal(ifgan_task.target_face_table("class_pixel_mean", averages),
                                averages[:, None])
  unit = examples["image"].astype(np.float64) / 127.5 - 1  # 0 -> -1, 255 -> 1
  for label in range(CLASSES):
    np.testing.assert_allclose(averages[label], unit[examples["label"] == label].mean(axis=0),
                               atol=1e-6)
    np.testing.assert_array_equal(grid[label], examples["image"][examples["label"] == label][:2])
  assert count == 10 and grid.shape == (CLASSES, 2, SIDE, SIDE, 1)
  with pytest.raises(ValueError, match="no images of c"):
    ifgan_task.summarize_training_split(
        batches_lib.array_batches({key: value[examples["label"] < 2]
                                   for key, value in examples.items()}, 4),
        CLASS_NAMES, per_class=2)


def test_one_step_lowers_the_discriminators_loss_on_its_batch_and_moves_every_gamma():
  examples = toy_examples()
  task = make_task(tiny_config())
  batch = first_batch(examples)
  state = task.init_state(batch, jax.random.PRNGKey(0))
  assert set(gammas(state.params).values()) == {0.0}
  x = pixels.from_uint8(batch["image"])
  targets = ifgan.target_faces(state.extra["target_faces"], batch["label"])
  generated = task._apply(state.params, x, method="generate")
  before = task.discriminator_loss(state.params, x, targets, generated)
  stepped, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
  np.testing.assert_allclose(metrics["loss/discriminator"], before, rtol=1e-5)
  after = task.discriminator_loss({**state.params, "discriminator":
                                   stepped.params["discriminator"]}, x, targets, generated)
  assert float(after) < float(before)
  # gamma starts at 0 but has a gradient, so the attention modules can switch themselves on.
  assert all(value != 0.0 for value in gammas(stepped.params).values())
  assert int(stepped.step) == 1 and int(metrics["skipped"]) == 0
  assert not np.allclose(stepped.params["centres"], state.params["centres"])
  again, _ = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
  jax.tree.map(np.testing.assert_array_equal, again, stepped)  # pure: same inputs, same state


def test_the_prediction_depends_on_the_input_for_ifgan_and_the_baseline():
  examples = toy_examples()
  x = objectives.dequantize(None, examples["image"][:6], 8)  # What class_logits takes.
  for config in (tiny_config(), baseline_config()):
    name = config.model.name
    model = ifgan_task.create_model(config.model)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    class_logits = functools.partial(model.apply, method="class_logits")
    logits = jax.jit(class_logits)(variables, x)
    assert float(jnp.abs(logits[0] - logits[1:]).max()) > 1e-4, name
    first_logit = lambda image, apply=class_logits, v=variables: apply(v, image)[0, 0]
    gradient = jax.jit(jax.grad(first_logit))(x[:1])
    assert float(jnp.abs(gradient).max()) > 0, name


def run(workdir, config, examples):
  mesh = parallel.make_mesh()
  iterator = ArrayIterator(examples["image"], examples["label"],
                           global_batch_size=config.batch_size,
                           sharding=parallel.batch_sharding(mesh))
  writer = RecordingWriter()
  result = loop.train(make_task(config, examples, mesh), config, train_iterator=iterator,
                      workdir=Workdir(str(workdir)), writer=writer, mesh=mesh)
  return result, writer


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run_and_evaluate_reads_the_workdir(tmp_path):
  examples = toy_examples()
  # Traced with lax's convolution, which XLA:CPU compiles in about half the time of flaxflow.conv's
  # matrix products: resuming does not depend on how a convolution is computed.
  with conv.lax_convolutions():
    full, full_writer = run(tmp_path / "full", tiny_config(sample_every=2), examples)
    assert sorted(os.listdir(tmp_path / "full" / "samples")) == ["step_0000002.png",
                                                               "step_0000004.png"]
    # A run stopped after its checkpoint of step 2: the full run's, without the later one.
    assert stopped_copy(tmp_path / "full", tmp_path / "parts", save_interval_steps=2) == [2, 4]
    resumed, resumed_writer = run(tmp_path / "parts", tiny_config(), examples)
  assert sorted(resumed_writer.scalars) == [3, 4]  # it took the steps after the checkpoint only
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  for step in (3, 4):
    np.testing.assert_allclose(resumed_writer.scalars[step]["train/loss"],
                               full_writer.scalars[step]["train/loss"], rtol=1e-6)
  # launch.evaluate's path: the family's trained model, scored by class_logits alone.
  trained = tasks.load_trained(str(tmp_path / "full"))
  np.testing.assert_array_equal(trained.variables["constants"]["target_faces"],
                                full.state.extra["target_faces"])
  report = analysis.evaluate(trained.model, trained.variables,
                             batches_lib.array_batches(examples, 8), n_bits=8,
                             class_names=CLASS_NAMES, rng=jax.random.PRNGKey(0))
  assert "bits_per_dim" not in report and report["num_examples"] == len(examples["label"])
  np.testing.assert_allclose(report["accuracy"], full.eval_metrics["accuracy"], atol=1e-6)


def test_the_baseline_trains_only_its_classifier(tmp_path):
  result, writer = run(tmp_path, baseline_config(), toy_examples())
  assert set(result.state.params) == {"classifier", "centres"} and result.state.extra is None
  assert "train/loss/island" in writer.scalars[1]
  assert "train/loss/discriminator" not in writer.scalars[1]
  assert set(result.eval_metrics) == {"accuracy", "cross_entropy"}


@pytest.mark.parametrize("field, value, message", [
    ("model.attention_skip", 2, "attention_skip=2: expected a level in 0..1"),
    ("loss.adversarial", "wasserstein", "loss.adversarial='wasserstein'"),
    ("model.norm", "batch", "model.norm='batch'"),
    ("loss.l1_weight", -1.0, "loss.l1_weight=-1.0"),
])
def test_a_bad_field_is_named(field, value, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    ifgan_task.check_config(tiny_config(**{field: value}))


# Trains the tiny IF-GAN for 3 steps on 1 or 8 simulated devices and prints losses and what the
# trained networks compute. Traced with lax's convolution, which XLA:CPU compiles in about half the
# time of flaxflow.conv's matrix products and which the accelerators that data parallelism is for
# run; how the batch is split is the same either way.
_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "tests")
    sys.path.insert(0, "tests/gan")
    from flaxflow import parallel
    parallel.select_platform("cpu")
    import jax
    import numpy as np
    import test_ifgan as helpers
    from flaxflow import conv
    from flaxflow.gan import pixels
    from flaxflow.tasks import ifgan as ifgan_task
    config = helpers.tiny_config(num_steps=3, batch_size=8, eval_batch_size=8)
    examples = helpers.toy_examples()
    with conv.lax_convolutions():
      result, writer = helpers.run(sys.argv[1], config, examples)
      task = helpers.make_task(config, examples)

      @jax.jit
      def outputs(params, x):  # one program, not one per operation
        generated = task._apply(params, x, method="generate")
        return [generated, task._apply(params, x, generated, method="discriminate"),
                *task._apply(params, x, generated, method="classify"), params["centres"]]

      computed = outputs(jax.device_get(result.state.params),
                         pixels.from_uint8(examples["image"][:8]))
    print("RESULT " + json.dumps({"devices": jax.device_count(),
                                  "outputs": [np.asarray(o, np.float64).ravel().tolist()
                                              for o in computed],
                                  "losses": [writer.scalars[s]["train/loss"] for s in (1, 2, 3)],
                                  "accuracy": result.eval_metrics["accuracy"]}))
""")


@pytest.mark.slow
def test_eight_devices_take_the_same_steps_as_one(tmp_path):
  one, eight = (run_on_simulated_devices(_WORKER, tmp_path / name, devices)
                for name, devices in (("one", 1), ("eight", 8)))
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)
  # The networks are compared by what they compute, not parameter by parameter: the bias of a
  # convolution followed by instance norm has a gradient that is zero up to rounding, which
  # differs with the reduction order, and Adam turns any such gradient into a full step.
  for eight_output, one_output in zip(eight["outputs"], one["outputs"]):
    np.testing.assert_allclose(eight_output, one_output, rtol=1e-3, atol=1e-4)
  assert eight["accuracy"] == one["accuracy"]

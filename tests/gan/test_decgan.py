"""DECGAN: shapes and a pure step, the association losses against a hand-computed example, the
history buffer, the condition reaching the generator, E2 reading new people's expressions,
resume through the loop, the synthesis functions, and the task's config checks."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flaxflow.data.synthetic_faces import factors, render
from flaxflow import conv, loop, parallel, scoring, tasks
from flaxflow.analysis import decgan_inference
from flaxflow.gan import decgan, pixels
from flaxflow.tasks import decgan as decgan_task
from flaxflow.workdir import Workdir
from training_helpers import ArrayIterator, RecordingWriter, stopped_copy

NUM_CLASSES = 3
TINY_MODEL = dict(name="decgan", image_shape=(8, 8, 1), num_classes=NUM_CLASSES,
                  encoder_widths=(4, 8, 8), encoder_kernels=(3, 3, 3), encoder_embedding_features=8,
                  generator_widths=(8, 8, 4), generator_kernels=(3, 3, 3),
                  generator_output_kernel=3, discriminator_widths=(4, 8, 8, 8),
                  discriminator_kernel=3, share_generators=True, condition_shifts=True,
                  identity_code="embedding", upsampling="transposed", output="drawn",
                  discriminator_condition="concatenated", expression_adversary_width=0,
                  generator_sees_image=False)


def tiny_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      dataset="tiny", seed=0, batch_size=8, eval_batch_size=8, num_steps=6, log_every=1,
      checkpoint_every=3, keep_checkpoints=5, max_consecutive_nonfinite=3, sample_every=0,
      eval_every=0,
      optimizer=dict(name="adam", learning_rate=2e-3, warmup_steps=0, schedule="constant",
                     grad_clip_norm=0.0, b1=0.5, b2=0.999, eps=1e-8),
      decgan=dict(cycle_weight=10.0, classification_weight=1.0, association_weight=1.0,
                  target_class_weight=1.0, reconstruction_weight=10.0, history_size=4,
                  adversarial_loss="non_saturating", expression_adversary_weight=0.0,
                  discriminator_class_weight=1.0, change_weight=0.0, paired_weight=0.0,
                  one_hot_fraction=0.0,
                  eval_people=0),
      model=dict(TINY_MODEL)))
  config.update_from_flattened_dict(overrides)
  return config


def tiny_data(count=32):
  rng = np.random.default_rng(0)
  labels = (np.arange(count) % NUM_CLASSES).astype(np.int32)
  images = np.clip(60 + 60 * labels[:, None, None, None] + rng.normal(0, 30, (count, 8, 8, 1)),
                   0, 255).astype(np.uint8)
  return images, labels


def tiny_task(**overrides):
  config = tiny_config(**overrides)
  return decgan_task.create_task(config, parallel.make_mesh(), image_shape=(8, 8, 1),
                                 class_names=["a", "b", "c"]), config


def batch_of(count=8):
  images, labels = tiny_data(count)
  return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def test_the_state_has_every_network_and_the_step_is_pure():
  task, _ = tiny_task()
  batch = batch_of()
  state = task.init_state(batch, jax.random.PRNGKey(0))
  assert set(state.params) == {"E1", "E2", "G1", "D"}
  assert state.extra.images.shape == (NUM_CLASSES, 4, 8, 8, 1)
  assert state.extra.conditions.shape == (NUM_CLASSES, 4, NUM_CLASSES)
  before = jax.tree.map(np.array, state)
  step = jax.jit(task.train_step)
  first, metrics = step(state, batch, jax.random.PRNGKey(1))
  again, metrics_again = step(state, batch, jax.random.PRNGKey(1))
  jax.tree.map(np.testing.assert_array_equal, first, again)
  jax.tree.map(np.testing.assert_array_equal, metrics, metrics_again)
  jax.tree.map(np.testing.assert_array_equal, state, before)  # The input state is untouched.
  assert jax.tree.structure(first) == jax.tree.structure(state)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), first) == jax.tree.map(
      lambda a: (a.shape, a.dtype), state)
  assert int(first.step) == 1 and int(first.extra.counts.sum()) == 8
  for name in ("E1", "E2", "G1", "D"):
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), first.params[name],
                           state.params[name])
    assert any(jax.tree.leaves(changed)), name
  assert all(np.isfinite(float(value)) for value in metrics.values())
  assert {"loss", "accuracy", "loss/cycle", "loss/reconstruction", "loss/walker", "loss/visit",
          "skipped", "consecutive_skipped"} <= set(metrics)


def test_separate_generators_add_g2_which_the_cycle_uses():
  task, _ = tiny_task(**{"model.share_generators": False})
  state = task.init_state(batch_of(), jax.random.PRNGKey(0))
  assert set(state.params) == {"E1", "E2", "G1", "G2", "D"}
  x = pixels.from_uint8(batch_of()["image"])
  source, target = jax.nn.one_hot(jnp.arange(8) % 3, 3), jax.nn.one_hot(jnp.arange(8) % 2, 3)
  cycle = lambda params: task.model.apply({"params": params}, x, source, target,
                                          method="cycle_to_condition")
  other_g2 = dict(state.params, G2=jax.tree.map(lambda a: a + 0.1, state.params["G2"]))
  assert not np.allclose(cycle(state.params), cycle(other_g2))
  other_g1 = dict(state.params, G1=jax.tree.map(lambda a: a + 0.1, state.params["G1"]))
  np.testing.assert_array_equal(cycle(state.params), cycle(other_g1))


EVERY_OPTION = {"model.identity_code": "embedding", "model.upsampling": "resize",
                "model.output": "mask", "decgan.change_weight": 1.0,
                "model.discriminator_condition": "class_head",
                "model.expression_adversary_width": 8, "decgan.expression_adversary_weight": 1.0,
                "decgan.one_hot_fraction": 0.5, "decgan.paired_weight": 1.0,
                "model.generator_sees_image": True}


# Faces as small as the tiny model's, for the oracle's rendered pairs.
TINY_BUILD = scoring.FaceBuild(image_size=8, seed=0,
                               subjects={"train": 3, "validation": 1, "test": 1},
                               images_per_subject=4)


def test_a_tiny_decgan_trains_with_every_option_on():
  # Seven classes, as the oracle's faces have.
  config = tiny_config(**EVERY_OPTION, **{"model.num_classes": len(factors.CLASS_NAMES)})
  task = decgan_task.create_task(config, parallel.make_mesh(), image_shape=(8, 8, 1),
                                 class_names=factors.CLASS_NAMES,
                                 synthetic_faces=lambda: (TINY_BUILD, None))
  batch = batch_of()
  state = task.init_state(batch, jax.random.PRNGKey(0))
  assert set(state.params) == {"E1", "E2", "G1", "D", "A"}
  step = jax.jit(task.train_step)
  first, _ = step(state, batch, jax.random.PRNGKey(1))
  second, metrics = step(first, batch, jax.random.PRNGKey(1))
  for name in state.params:
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), second.params[name],
                           state.params[name])
    assert any(jax.tree.leaves(changed)), name
  assert all(np.isfinite(float(value)) for value in metrics.values())
  assert {"loss/expression_adversary", "loss/confusion", "adversary_accuracy", "loss/paired",
          "loss/discriminator_class"} <= set(metrics)
  assert int(metrics["skipped"]) == 0


def test_the_oracle_pairs_are_the_same_face_with_another_expression():
  pairs = decgan_task.oracle_pairs(TINY_BUILD, 6)(3)
  assert pairs["image"].shape == pairs["truth"].shape == (6, 8, 8, 1)
  assert (pairs["label"] != pairs["target_label"]).all()
  np.testing.assert_array_equal(decgan_task.oracle_pairs(TINY_BUILD, 6)(3)["truth"],
                                pairs["truth"])
  # Rendered with its own class at the stated intensity, the source is close to its truth.
  other = decgan_task.oracle_pairs(TINY_BUILD, 6)(4)
  assert not np.array_equal(other["image"], pairs["image"])


def fresh_model(**overrides):
  """The tiny model with `overrides`, its fresh variables (initialised in one compiled call),
  4 inputs in [-1, 1], and source and target one-hots for them."""
  model = tiny_task(**overrides)[0].model
  x = pixels.from_uint8(batch_of(4)["image"])
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x, x)
  source, target = jax.nn.one_hot(jnp.array([0, 1, 2, 0]), 3), jax.nn.one_hot(jnp.full(4, 1), 3)
  return model, variables, x, source, target


def test_the_difference_output_keeps_the_input_where_the_drawing_does_not_change():
  model, variables, x, source, target = fresh_model(**{"model.output": "difference"})
  np.testing.assert_allclose(model.apply(variables, x, source, source,
                                         method="transfer_between"), x, atol=1e-6)
  z = model.apply(variables, x, method="identity")[0]
  drawn = lambda condition: model.apply(variables, z, condition, method="generate")
  np.testing.assert_allclose(
      model.apply(variables, x, source, target, method="transfer_between"),
      jnp.clip(x + drawn(target) - drawn(source), -1, 1), atol=1e-6)


def test_the_mask_output_blends_the_drawing_into_the_input():
  model, variables, x, source, target = fresh_model(**{"model.output": "mask"})
  z = model.apply(variables, x, method="identity")[0]
  drawn, mask = model.apply(variables, z, target, method=lambda module, z, condition:
                            module.G1(z, condition))
  assert mask.shape == (4, 8, 8, 1) and float(mask.min()) > 0 and float(mask.max()) < 0.2
  np.testing.assert_allclose(
      model.apply(variables, x, source, target, method="transfer_between"),
      mask * drawn + (1 - mask) * x, atol=1e-6)


def test_a_generator_that_sees_the_image_draws_from_it():
  model, variables, x, _, target = fresh_model(**{"model.generator_sees_image": True})
  z = model.apply(variables, x, method="identity")[0]
  drawn = lambda image: model.apply(variables, z, target, image, method="generate")
  # The drawing of each example depends on its own image, and on no other.
  gradient = jax.grad(lambda image: drawn(image)[0].sum())(x)
  assert float(jnp.abs(gradient[0]).max()) > 0 and not np.any(np.asarray(gradient[1:]))
  with pytest.raises(ValueError, match="generator_sees_image=True: G needs the image"):
    model.apply(variables, z, target, method="generate")
  np.testing.assert_array_equal(decgan.average_pool(jnp.arange(16.).reshape(1, 4, 4, 1), 2)[
      0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize("upsampling, checkered", [("transposed", True), ("resize", False)])
def test_resize_upsampling_draws_a_flat_map_flat_and_transposed_convolutions_checker_it(
    upsampling, checkered):
  # A constant code: every layer's input is flat away from the borders, so any pattern inside
  # comes from the upsampling's uneven overlaps (the checkerboard).
  generator = decgan.Generator(channels=1, start_shape=(8, 8), widths=(4, 4, 4),
                               kernels=(3, 3, 3), output_kernel=3, upsampling=upsampling)
  z, condition = jnp.ones((1, 8, 8, 2)), jax.nn.one_hot(jnp.array([1]), 3)
  params = generator.init(jax.random.PRNGKey(0), z, condition)
  inside = generator.apply(params, z, condition)[0][0, 6:-6, 6:-6, 0]
  assert (float(jnp.ptp(inside)) > 1e-3) == checkered


@pytest.mark.parametrize("kernel", [3, 5])
def test_resize_conv_is_a_convolution_of_the_doubled_map(kernel):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))
  layer = decgan.ResizeConv(4, kernel)
  params = layer.init(jax.random.PRNGKey(1), x)
  doubled = conv.Conv(4, (kernel, kernel), padding="SAME", use_bias=False).apply(
      params, decgan.upsample(x))
  assert doubled.shape == (2, 10, 12, 4)
  np.testing.assert_allclose(layer.apply(params, x), doubled, atol=1e-5)


def test_a_class_head_discriminator_sees_the_image_alone():
  discriminator = decgan.Discriminator(widths=(4, 8, 8, 8), kernel=3, num_classes=NUM_CLASSES)
  x = pixels.from_uint8(batch_of(4)["image"])
  conditions = [jax.nn.one_hot(jnp.full(4, c), NUM_CLASSES) for c in range(2)]
  params = discriminator.init(jax.random.PRNGKey(0), x, conditions[0])
  (patches, classes), (other_patches, other_classes) = [
      discriminator.apply(params, x, condition) for condition in conditions]
  assert classes.shape == (4, NUM_CLASSES) and patches.shape == (4, 2, 2)
  np.testing.assert_array_equal(patches, other_patches)
  np.testing.assert_array_equal(classes, other_classes)
  paper = decgan.Discriminator(widths=(4, 8, 8, 8), kernel=3)
  params = paper.init(jax.random.PRNGKey(0), x, conditions[0])
  assert paper.apply(params, x, conditions[0])[1] is None
  assert not np.allclose(paper.apply(params, x, conditions[0])[0],
                         paper.apply(params, x, conditions[1])[0])


def test_training_conditions_use_true_one_hots_for_the_chosen_fraction_of_rows():
  rng = np.random.default_rng(0)
  source_p, target_p = (jax.nn.softmax(jnp.asarray(rng.normal(size=(64, 3)))) for _ in range(2))
  labels, target_labels = jnp.arange(64) % 3, (jnp.arange(64) + 1) % 3
  one_hot = lambda values: jax.nn.one_hot(values, 3)
  for fraction, expected in ((0.0, (source_p, target_p)),
                             (1.0, (one_hot(labels), one_hot(target_labels)))):
    for got, want in zip(decgan.training_conditions(source_p, target_p, labels, target_labels,
                                                    fraction, jax.random.PRNGKey(0)), expected):
      np.testing.assert_array_equal(got, want)
  source, target = decgan.training_conditions(source_p, target_p, labels, target_labels, 0.5,
                                              jax.random.PRNGKey(0))
  true = np.all(np.asarray(source) == np.asarray(one_hot(labels)), axis=1)
  assert 16 < true.sum() < 48  # Both kinds, about half each.
  np.testing.assert_array_equal(np.asarray(target)[true], np.asarray(one_hot(target_labels))[true])
  np.testing.assert_array_equal(np.asarray(target)[~true], np.asarray(target_p)[~true])


def test_the_confusion_loss_is_least_for_a_uniform_reading():
  np.testing.assert_allclose(decgan.confusion_loss(jnp.zeros((2, 7))), math.log(7), rtol=1e-6)
  assert float(decgan.confusion_loss(jnp.array([[5.0, 0.0, 0.0]]))) > math.log(3)


def test_walker_and_visit_losses_match_a_hand_computed_example():
  # Similarities diag(ln 3): P^ab = P^ba = [[3/4, 1/4], [1/4, 3/4]], so
  # P^aba = [[10/16, 6/16], [6/16, 10/16]]; every target is visited half the time.
  a = b = jnp.sqrt(math.log(3.0)) * jnp.eye(2)
  walker, visit = decgan.association_losses(a, b, jnp.array([0, 1]))
  np.testing.assert_allclose(walker, -math.log(10 / 16), rtol=1e-5)
  np.testing.assert_allclose(visit, math.log(2), rtol=1e-5)
  # One class: the round trip should be uniform over both sources, T = [[1/2, 1/2], ...].
  walker, _ = decgan.association_losses(a, b, jnp.array([1, 1]))
  np.testing.assert_allclose(walker, -(0.5 * math.log(10 / 16) + 0.5 * math.log(6 / 16)),
                             rtol=1e-5)


def test_a_lopsided_association_is_penalised_by_the_visit_loss():
  # Both sources see only the first target: visits (1, 0) -> -0.5 (log 1 + log 1e-8).
  a = jnp.array([[30.0, 0.0], [30.0, 0.0]])
  b = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  _, visit = decgan.association_losses(a, b, jnp.array([0, 1]))
  assert float(visit) > 5


def fill_and_query(rng, buffer=None, size=2):
  images = jnp.arange(6, dtype=jnp.float32).reshape(6, 1, 1, 1) * jnp.ones((6, 2, 2, 1))
  conditions = jax.nn.one_hot(jnp.array([0, 0, 0, 0, 1, 1]), 2)
  buffer = decgan.HistoryBuffer.empty(2, size, (2, 2, 1)) if buffer is None else buffer
  return decgan.query_history(buffer, images, conditions, jnp.array([0, 0, 0, 0, 1, 1]), rng)


def test_the_history_buffer_fills_first_then_is_a_function_of_the_key():
  buffer, shown, _ = fill_and_query(jax.random.PRNGKey(0), size=2)
  # Class 0 fills with images 0 and 1, class 1 with 4 and 5; until full, D sees the new image.
  np.testing.assert_array_equal(buffer.counts, [2, 2])
  np.testing.assert_array_equal(buffer.images[1, :, 0, 0, 0], [4, 5])
  np.testing.assert_array_equal(shown[[0, 1, 4, 5], 0, 0, 0], [0, 1, 4, 5])
  # Images 2 and 3 found class 0 filled by this batch: shown themselves, not kept.
  np.testing.assert_array_equal(buffer.images[0, :, 0, 0, 0], [0, 1])
  np.testing.assert_array_equal(shown[2:4, 0, 0, 0], [2, 3])
  results = [fill_and_query(jax.random.PRNGKey(key), buffer)[:2] for key in (7, 7, 8, 9, 10)]
  jax.tree.map(np.testing.assert_array_equal, results[0], results[1])
  differs = [not all(jax.tree.leaves(jax.tree.map(np.array_equal, results[0], other)))
             for other in results[2:]]
  assert any(differs)
  for updated, shown in results:
    # Full classes: D sees each new image or one its class kept, and the class keeps its own.
    np.testing.assert_array_equal(updated.counts, [2, 2])
    labels = np.array([0, 0, 0, 0, 1, 1])
    for label in (0, 1):
      old, new = np.asarray(buffer.images[label, :, 0, 0, 0]), np.flatnonzero(labels == label)
      assert np.isin(np.asarray(shown)[labels == label, 0, 0, 0], np.union1d(old, new)).all()
      assert np.isin(np.asarray(updated.images[label, :, 0, 0, 0]), np.union1d(old, new)).all()
  swapped = [(np.asarray(shown)[:, 0, 0, 0] != np.arange(6)).sum() for _, shown in results]
  assert max(swapped) > 0 and min(swapped) < 6


def test_a_full_history_swaps_against_what_it_held_before_the_batch():
  labels = np.array([0, 0, 0, 0, 1, 1])
  old = decgan.HistoryBuffer(
      images=(100.0 + jnp.arange(4.0)).reshape(2, 2, 1, 1, 1) * jnp.ones((1, 1, 2, 2, 1)),
      conditions=jnp.zeros((2, 2, 2)), counts=jnp.array([2, 2]))
  images = jnp.arange(6.0).reshape(6, 1, 1, 1) * jnp.ones((6, 2, 2, 1))
  for key in range(10):
    updated, shown, _ = decgan.query_history(old, images, jax.nn.one_hot(labels, 2),
                                             jnp.asarray(labels), jax.random.PRNGKey(key))
    shown, stored = np.asarray(shown)[:, 0, 0, 0], np.asarray(updated.images)[:, :, 0, 0, 0]
    swapped = shown != np.arange(6)
    for row in np.flatnonzero(swapped):  # It showed an old image of its class, now replaced.
      assert shown[row] in np.asarray(old.images)[labels[row], :, 0, 0, 0]
      assert shown[row] not in stored
    new = stored[stored < 100]
    assert set(new) <= set(np.flatnonzero(swapped))  # Only a row that swapped is kept...
    for label in (0, 1):  # ... in its own class, the later of two that drew the same slot.
      assert set(stored[label][stored[label] < 100]) <= set(np.flatnonzero(labels == label))


def test_partners_have_another_label_when_there_is_one():
  labels = jnp.array([0, 0, 1, 2, 2, 1, 0, 1])
  chosen = set()
  for key in range(20):
    offsets = decgan.partner_offsets(labels, jax.random.PRNGKey(key))
    partner = (np.arange(8) + np.asarray(offsets)) % 8
    assert (np.asarray(labels)[partner] != np.asarray(labels)).all()
    np.testing.assert_array_equal(decgan.take_partners(labels, offsets), labels[partner])
    chosen.add(int(partner[0]))
  assert chosen == {2, 3, 4, 5, 7}  # In a batch of 8 every row of another label is drawn.
  lone = decgan.partner_offsets(jnp.zeros(4, jnp.int32), jax.random.PRNGKey(0))
  assert lone.shape == (4,) and ((lone >= 1) & (lone <= 3)).all()
  np.testing.assert_array_equal(decgan.partner_offsets(jnp.zeros(1, jnp.int32),
                                                       jax.random.PRNGKey(0)), [0])


def test_partners_look_a_bounded_distance_down_the_batch():
  labels = jnp.arange(64) % 7
  offsets = np.asarray(decgan.partner_offsets(labels, jax.random.PRNGKey(0)))
  assert offsets.min() >= 1 and offsets.max() <= decgan.PARTNER_CANDIDATES
  images = jnp.arange(64.0)[:, None, None, None] * jnp.ones((1, 2, 2, 1))
  np.testing.assert_array_equal(decgan.take_partners(images, offsets)[:, 0, 0, 0],
                                (np.arange(64) + offsets) % 64)


def test_the_generator_output_depends_on_the_target_condition():
  # z as E1's feature map, the code the condition is tiled over. Whether the condition reaches
  # the output is a property of the layers, which any parameters show: fresh ones, without the
  # train state and step whose compilation made this test take minutes.
  model, variables, x, _, _ = fresh_model(**{"model.identity_code": "feature_map"})
  transfer = jax.jit(lambda condition: model.apply(variables, x, condition,
                                                   method="transfer_to_condition"))
  one_hot = lambda c: jax.nn.one_hot(jnp.full(4, c), NUM_CLASSES)
  outputs = [transfer(one_hot(c)) for c in range(NUM_CLASSES)]
  for c in range(1, NUM_CLASSES):
    assert float(jnp.abs(outputs[c] - outputs[0]).mean()) > 1e-3
  # Away from the borders too: the condition is not erased by instance norm.
  assert float(jnp.abs(outputs[1] - outputs[0])[:, 2:-2, 2:-2].mean()) > 1e-3
  gradient = jax.grad(lambda condition: transfer(condition).sum())(one_hot(0))
  assert float(jnp.abs(gradient).min()) > 0


def test_transfer_functions_give_uint8_images_of_the_chosen_expression():
  task, _ = tiny_task()
  state = task.init_state(batch_of(), jax.random.PRNGKey(0))
  model, variables = task.model, {"params": state.params}
  images = batch_of(4)["image"]
  by_example = decgan.transfer(model, variables, images, images[::-1])
  assert by_example.shape == images.shape and by_example.dtype == jnp.uint8
  # transfer = transfer_to_condition with E2's p(l) of the target image.
  probabilities = decgan.expression_probabilities(model, variables, images[::-1])
  by_condition = pixels.to_uint8(model.apply(variables, pixels.from_uint8(images),
                                             probabilities, method="transfer_to_condition"))
  np.testing.assert_array_equal(by_example, by_condition)
  grid = decgan_inference.class_transfers(model, variables, np.asarray(images))
  assert grid.shape == (4, NUM_CLASSES, 8, 8, 1)
  np.testing.assert_array_equal(
      grid[:, 2], decgan.transfer_to_class(model, variables, images, jnp.full(4, 2)))
  means = np.eye(NUM_CLASSES, dtype=np.float32)[::-1]  # Class c given class 2 - c's condition.
  moved = decgan_inference.class_transfers(model, variables, np.asarray(images), means)
  np.testing.assert_array_equal(moved[:, 0], grid[:, 2])
  cycles = decgan_inference.class_cycles(model, variables, np.asarray(images))
  assert cycles.shape == grid.shape and cycles.dtype == np.uint8


def test_bad_inputs_get_one_line_errors(tmp_path):
  task, config = tiny_task()
  state = task.init_state(batch_of(), jax.random.PRNGKey(0))
  model, variables = task.model, {"params": state.params}
  images = np.asarray(batch_of(2)["image"])
  for wrong in (np.zeros((2, 16, 16, 1), np.uint8), np.zeros((2, 8, 8, 3), np.uint8),
                images.astype(np.float32)):
    with pytest.raises(ValueError, match=r"^images of shape .*: expected uint8 \(B, 8, 8, 1\)"):
      decgan_inference.class_transfers(model, variables, wrong)
  with pytest.raises(ValueError, match=r"^class index 3: expected an index in \[0, 3\)$"):
    decgan.transfer_to_class(model, variables, images, np.array([0, 3]))
  flow_run = Workdir(str(tmp_path))
  flow_run.write_config(ml_collections.ConfigDict({**config.to_dict(),
                                                   "model": {"name": "bplf"}}))
  with pytest.raises(ValueError, match=r"config.json: model.name='bplf', a run of another family"):
    decgan_task.load_trained(str(tmp_path))


def test_class_mean_conditions_average_e2_over_each_class():
  task, _ = tiny_task()
  state = task.init_state(batch_of(), jax.random.PRNGKey(0))
  variables = {"params": state.params}
  images, labels = tiny_data(16)
  labels[labels == 2] = 0  # Class 2 has no images: its one-hot.
  batches = [{"image": images[:8], "label": labels[:8], "mask": np.ones(8, bool)},
             {"image": images[8:], "label": labels[8:], "mask": np.arange(8) < 5}]
  means = decgan_inference.class_mean_conditions(task.model, variables, batches)
  p = np.asarray(decgan.expression_probabilities(task.model, variables, images[:13]))
  for c in (0, 1):
    np.testing.assert_allclose(means[c], p[labels[:13] == c].mean(axis=0), rtol=1e-5)
  np.testing.assert_array_equal(means[2], [0, 0, 1])


def run_loop(workdir, config):
  mesh = parallel.make_mesh()
  images, labels = tiny_data()
  iterator = ArrayIterator(images, labels, global_batch_size=config.batch_size,
                           sharding=parallel.batch_sharding(mesh))
  task = decgan_task.create_task(config, mesh, image_shape=(8, 8, 1),
                                 class_names=["a", "b", "c"])
  writer = RecordingWriter()
  return loop.train(task, config, train_iterator=iterator, workdir=Workdir(str(workdir)),
                    writer=writer, mesh=mesh), writer


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(tmp_path):
  # A copy of the run without its last checkpoint is a run stopped after step 3 (two training
  # runs, not three: each compiles its step).
  full, full_writer = run_loop(tmp_path / "full", tiny_config())
  assert stopped_copy(tmp_path / "full", tmp_path / "parts", save_interval_steps=3) == [3, 6]
  resumed, resumed_writer = run_loop(tmp_path / "parts", tiny_config())
  assert int(resumed.state.extra.counts.sum()) == NUM_CLASSES * 4  # The buffer was resumed full.
  jax.tree.map(np.testing.assert_array_equal, resumed.state, full.state)
  for step in range(4, 7):
    np.testing.assert_allclose(resumed_writer.scalars[step]["train/loss"],
                               full_writer.scalars[step]["train/loss"], rtol=1e-6)


def test_the_family_is_chosen_by_model_name_and_bad_fields_are_named():
  assert tasks.family_of(tiny_config()) is decgan_task
  for field, value, message in [
      ("decgan.history_size", -1, "--config.decgan.history_size=-1"),
      ("decgan.cycle_weight", -1.0, "--config.decgan.cycle_weight=-1.0"),
      ("decgan.adversarial_loss", "wgan", "--config.decgan.adversarial_loss='wgan'"),
      ("model.generator_kernels", (3, 3), "--config.model.generator_kernels=(3, 3)"),
      ("model.image_shape", (6, 6, 1), "--config.model.image_shape=(6, 6, 1)"),
      ("model.output", "blend", "--config.model.output='blend': expected one of drawn, "),
      ("model.upsampling", "bilinear", "--config.model.upsampling='bilinear'"),
      ("decgan.one_hot_fraction", 1.5, "--config.decgan.one_hot_fraction=1.5: expected a "),
      ("decgan.expression_adversary_weight", 1.0,
       "--config.decgan.expression_adversary_weight=1.0: expected 0 without an adversary"),
  ]:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
      tasks.check_config(tiny_config(**{field: value}))
  with pytest.raises(ValueError, match=r"--config.model.generator_widths=\(8, 4\): expected 3"):
    tasks.check_config(tiny_config(**{"model.generator_widths": (8, 4),
                                      "model.generator_kernels": (3, 3)}))
  with pytest.raises(ValueError, match="config.model.num_classes=3, but tiny has 2 classes"):
    decgan_task.create_task(tiny_config(), parallel.make_mesh(), image_shape=(8, 8, 1),
                            class_names=["a", "b"])


@pytest.mark.slow
def test_e2_learns_to_read_expressions_of_new_people():
  # What E2 must do for DECGAN to change expressions at all: tell the expressions of faces it has
  # never seen. Expressions differ in where things are (mouth corners, brows), which an encoder
  # that averages its instance-normed features over space cannot see (it stayed near chance).
  train = factors.image_factors(0, range(30), images_per_subject=14).at_full_intensity()
  test = factors.image_factors(0, range(140, 150), images_per_subject=14).at_full_intensity()
  images = [pixels.from_uint8(render(*drawn.as_render_args(), 32)) for drawn in (train, test)]
  encoder = decgan.Encoder(widths=(8, 16, 16), kernels=(5, 3, 3), embedding_features=32,
                           num_classes=7)
  params = encoder.init(jax.random.PRNGKey(0), images[0][:1])["params"]
  optimizer = optax.adam(2e-3)

  @jax.jit
  def step(params, opt_state, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        encoder.apply({"params": p}, x)[2], y).mean()
    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  for batch in np.random.default_rng(0).integers(0, len(images[0]), (150, 32)):
    params, opt_state = step(params, opt_state, images[0][batch], train.expression[batch])
  predicted = jnp.argmax(encoder.apply({"params": params}, images[1])[2], axis=-1)
  assert float(jnp.mean(predicted == test.expression)) >= 0.6  # chance is 1/7


@pytest.mark.slow
def test_the_transfer_is_scored_against_ground_truth_while_it_trains():
  from scoring.helpers import SMALL_BUILD, small_readers
  model = dict(TINY_MODEL, image_shape=(32, 32, 1), num_classes=7, **{
      name.split(".")[1]: value for name, value in EVERY_OPTION.items()
      if name.startswith("model.")})
  config = tiny_config(**{"decgan.eval_people": 2, "eval_every": 2})
  config.model = ml_collections.ConfigDict(model)
  config.decgan.expression_adversary_weight = 1.0
  task = decgan_task.create_task(config, parallel.make_mesh(), image_shape=(32, 32, 1),
                                 class_names=factors.CLASS_NAMES,
                                 synthetic_faces=lambda: (SMALL_BUILD, small_readers()))
  images = render(*factors.image_factors(0, range(2), 4).as_render_args(), 32)
  state = task.init_state({"image": jnp.asarray(images)}, jax.random.PRNGKey(0))
  writer = RecordingWriter()
  metrics = task.score_transfer(state, 7, writer)
  assert set(metrics) == {f"transfer/{name}" for name in decgan_task.TRANSFER_FIGURES}
  assert writer.scalars[7] == {f"eval/{name}": value for name, value in metrics.items()}
  assert 0 <= metrics["transfer/target_accuracy"] <= 1
  assert metrics["transfer/ceiling_identity_kept"] > 0.5
  scoring_set, _, probed = task._scoring_set
  assert len(scoring_set.sources.images) == 2 * 7 == len(scoring_set.truths)
  assert len(probed.images) == 6 * 7 * decgan_task.PROBE_PER_CLASS
  assert len(task.periodic_actions(Workdir("/nonexistent"), writer)) == 1

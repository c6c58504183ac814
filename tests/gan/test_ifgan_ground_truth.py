"""IF-GAN's targets and its scoring against the synthetic faces' ground truth: each target's
share of the true expression change, the test faces' regimes, the identity variance ratio,
McNemar's test, E's switches, and a tiny run on rendered faces with its final metrics."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flaxflow import loop, parallel, scoring
from flaxflow.analysis import batches as batches_lib
from flaxflow.analysis import ifgan_ground_truth as truth_lib
from flaxflow.data.synthetic_faces import factors, render
from flaxflow.gan import ifgan, pixels
from flaxflow.tasks import ifgan as ifgan_task
from flaxflow.workdir import Workdir
from training_helpers import ArrayIterator, RecordingWriter

from .test_ifgan import tiny_config

SIDE = 16
CLASSES = len(factors.CLASS_NAMES)
# Enough images that every class has peak frames among the training people's.
TINY_BUILD = scoring.FaceBuild(image_size=SIDE, seed=0,
                               subjects={"train": 4, "validation": 1, "test": 3},
                               images_per_subject=40)


@functools.lru_cache(maxsize=None)
def tiny_readers() -> scoring.Readers:
  return scoring.fit_readers(TINY_BUILD, per_class=2)


def split_examples(split):
  """The images of `split` of TINY_BUILD as the dataset holds them, with their intensities."""
  drawn = TINY_BUILD.dataset_factors(split)
  return {"image": render(*drawn.as_render_args(), SIDE), "label": drawn.expression,
          "intensity": drawn.intensity}


def test_target_faces_interpolate_between_intensity_levels():
  table = jnp.arange(2 * 3, dtype=jnp.float32).reshape(2, 3, 1, 1, 1)  # levels at 0, 0.5, 1
  faces = ifgan.target_faces(table, jnp.array([0, 1, 1]), jnp.array([0.25, 1.0, 0.5]))
  np.testing.assert_allclose(faces.ravel(), [0.5, 5.0, 4.0])
  np.testing.assert_array_equal(ifgan.target_faces(table[:, :1], jnp.array([1, 0])).ravel(),
                                [3.0, 0.0])


def test_each_target_keeps_its_expected_share_of_the_expression_change():
  shares = ifgan_task.target_face_shares(TINY_BUILD)
  # The average-identity target is the truth itself (up to the interpolation and uint8 steps).
  assert shares["average_identity"]["own_intensity"] == pytest.approx(1.0, abs=0.02)
  # Means over people, poses and intensities keep only part of it, the aligned ones more.
  pixel, aligned = shares["class_pixel_mean"], shares["aligned_peak_class_mean"]
  assert 0 < pixel["full_intensity"] < aligned["full_intensity"] < 1
  # One face for every class keeps none; the truth at full intensity keeps all of itself.
  labels = np.arange(CLASSES)
  full = np.asarray(pixels.from_uint8(scoring.average_identity_renders(
      labels, truth_lib.full_intensities(labels), SIDE)))
  assert truth_lib.expression_change_share(np.zeros_like(full), full, labels) == 0.0
  assert truth_lib.expression_change_share(full, full, labels) == pytest.approx(1.0)


def test_the_test_faces_are_the_split_s_own_images_in_both_regimes():
  sets = truth_lib.face_sets(TINY_BUILD, "test")
  peak, every = sets["peak"], sets["all_intensities"]
  expressive = peak.label != factors.NEUTRAL
  assert (peak.intensity[expressive] > 0.7).all() and (peak.intensity[~expressive] == 0).all()
  assert (every.intensity <= peak.intensity).all()  # the same draws, two ranges
  np.testing.assert_array_equal(peak.person, np.repeat([0, 1, 2], 40))
  np.testing.assert_array_equal(every.image, split_examples("test")["image"])
  np.testing.assert_array_equal(peak.image[~expressive], every.image[~expressive])
  np.testing.assert_array_equal(
      peak.truth, scoring.average_identity_renders(peak.label, peak.intensity, SIDE))


def test_the_identity_variance_ratio_is_zero_for_one_face_and_one_for_the_input():
  grid = truth_lib.identity_grid(TINY_BUILD.identities("test"),
                                 np.stack([factors.NEUTRAL_NUISANCE] * 2), 0.7, SIDE)
  assert grid.shape == (CLASSES * 2, 3, SIDE, SIDE, 1)
  assert truth_lib.identity_variance_ratio(grid, grid) == 1.0
  same_face = np.repeat(grid[:, :1], 3, axis=1)
  assert truth_lib.identity_variance_ratio(grid, same_face) == 0.0


def test_other_class_indices_and_labels_always_change_the_class():
  labels = np.array([0, 0, 1, 2, 2, 6])
  assert (labels[truth_lib.other_class_indices(labels)] != labels).all()
  assert (truth_lib.other_labels(labels) != labels).all()


def test_mcnemar_counts_the_discordant_images():
  first = np.array([True] * 10 + [False] * 2 + [True] * 5)
  second = np.array([False] * 10 + [True] * 2 + [True] * 5)
  result = truth_lib.mcnemar(first, second)
  assert (result["first_only"], result["second_only"]) == (10, 2)
  assert result["p_value"] == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12)
  assert truth_lib.mcnemar(first, first)["p_value"] == 1.0


def faces_config(**overrides):
  """`tiny_config` on rendered faces of every class, trained towards average-identity renders."""
  return tiny_config(**{"dataset": "synthetic_faces/16", "target_face": "average_identity",
                        "model.num_classes": CLASSES, **overrides})


def faces_task(config, eval_batches=None):
  train = split_examples("train")
  return ifgan_task.create_task(
      config, parallel.make_mesh(), image_shape=(SIDE, SIDE, 1),
      class_names=factors.CLASS_NAMES, eval_batches=eval_batches,
      train_batches=lambda: batches_lib.array_batches(train, 64),
      synthetic_faces=lambda: (TINY_BUILD, tiny_readers()))


def test_e_can_be_trained_without_the_real_pair_and_without_reaching_g():
  config = faces_config(**{"loss.classifier_real_pair": False,
                           "loss.classifier_trains_generator": False, "loss.gan_weight": 0.0,
                           "loss.l1_weight": 0.0, "optimizer.weight_decay": 0.0})
  task = faces_task(config)
  assert task.target_faces.shape == (CLASSES, truth_lib.INTENSITY_LEVELS, SIDE, SIDE, 1)
  batch = {key: jnp.asarray(value[:8]) for key, value in split_examples("train").items()}
  state = task.init_state(batch, jax.random.PRNGKey(0))
  stepped, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
  # Nothing but E's loss, stopped at G(x): G does not move, E does.
  jax.tree.map(np.testing.assert_array_equal, stepped.params["generator"],
               state.params["generator"])
  assert not np.allclose(stepped.params["classifier"]["Dense_1"]["kernel"],
                         state.params["classifier"]["Dense_1"]["kernel"])
  # E saw the generated pair alone.
  x = pixels.from_uint8(batch["image"])
  logits, _ = task._apply(state.params, x, task._apply(state.params, x, method="generate"),
                          method="classify")
  cross_entropy = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), batch["label"]])
  np.testing.assert_allclose(metrics["loss/softmax"], cross_entropy, rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("target_face", "median", "target_face='median': expected one of"),
    ("loss.classifier_real_pair", 1, "loss.classifier_real_pair=1: expected True or False"),
    ("model.image_shape", (20, 20, 1), r"image_shape=\(20, 20, 1\): G's 3 levels"),
])
def test_a_bad_target_switch_or_image_shape_is_named(field, value, message):
  config = faces_config()
  parent, name = field.rpartition(".")[::2]
  section = config[parent] if parent else config
  fields = {**section.to_dict(), name: value}  # past ml_collections' own type check
  if parent:
    config[parent] = ml_collections.ConfigDict(fields)
  else:
    config = ml_collections.ConfigDict(fields)
  with pytest.raises(ValueError, match=message):
    ifgan_task.check_config(config)
  with pytest.raises(ValueError, match="target_face='average_identity': drawn from the synthetic"):
    ifgan_task.check_config(tiny_config(target_face="average_identity"))


@pytest.mark.slow
def test_a_tiny_run_on_faces_writes_both_regimes_final_metrics(tmp_path):
  config = faces_config(num_steps=2, checkpoint_every=2, eval_every=1, eval_batch_size=16)
  test = split_examples("test")
  task = faces_task(config, eval_batches=lambda: batches_lib.array_batches(test, 16))
  train = split_examples("train")
  mesh = task.mesh
  iterator = ArrayIterator(train["image"], train["label"], global_batch_size=8,
                           sharding=parallel.batch_sharding(mesh),
                           features={"intensity": train["intensity"]})
  writer = RecordingWriter()
  result = loop.train(task, config, train_iterator=iterator, workdir=Workdir(str(tmp_path)),
                      writer=writer, mesh=mesh)
  final = Workdir(str(tmp_path)).read_final_metrics()["eval"]
  for regime in scoring.COLUMNS:
    assert {"accuracy", "g_l1_to_average_identity", "g_ssim", "identity_variance_ratio",
            "expression_kept_ratio", "accuracy_with_other_g", "nearest_person_generated",
            "accuracy_with_true_target", "reader_accuracy_truth",
            "input_l1_to_average_identity"} <= set(final[regime])
    assert 0 <= final[regime]["identity_variance_ratio"] and 0 <= final[regime]["accuracy"] <= 1
  assert "eval/peak.accuracy" in writer.scalars[1]  # evaluated during training
  assert final["accuracy"] == result.eval_metrics["accuracy"]

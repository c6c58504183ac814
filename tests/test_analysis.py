"""Tests of flaxflow.analysis on tiny untrained (perturbed) models: evaluation, generation, t-SNE,
folds, ablation rows, figures and restoring a run's checkpoint."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from flaxflow import analysis, checkpointing, models, objectives, optimization
from flaxflow.tasks import flow
from flaxflow.launch.configs import digits_bplf
from tiny_models import NUM_CLASSES, build, perturb_params

RNG = jax.random.PRNGKey(0)
IMAGE_SHAPE = (4, 4, 1)
N_BITS = 5


def tiny_images(count=7, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (count, *IMAGE_SHAPE)).astype(np.uint8)


def tiny_labels(count=7):
  return (np.arange(count) % NUM_CLASSES).astype(np.int32)


@functools.lru_cache(maxsize=None)
def model_and_variables(name, **overrides):
  """A model and its variables with noise on every parameter (zero-initialised layers act)."""
  model = build(name, **overrides)
  labels = model.conditioning_labels(jnp.asarray(tiny_labels()))
  x = objectives.dequantize(None, tiny_images(), N_BITS)
  variables = jax.jit(lambda rng: model.init(rng, x, labels, method="log_prob"))(RNG)
  return model, perturb_params(variables, seed=1, scale=0.05)


def apply(model, variables, *args, **kwargs):
  """`model.apply`, jitted (eager flows run op by op, slowly)."""
  return jax.jit(lambda variables, *args: model.apply(variables, *args, **kwargs))(variables,
                                                                                   *args)


# The class-conditional variant of each model in the parametrised tests.
CONDITIONAL = {"bplf": {"num_classes": NUM_CLASSES}}


def examples(count=7):
  return {"image": tiny_images(count), "label": tiny_labels(count),
          "subject": np.array([f"s{i % 4}" for i in range(count)])}


# Batches.


def test_array_batches_pad_and_collect_examples_drops_the_padding():
  data = examples(7)
  batches = list(analysis.array_batches(data, 3))
  assert [batch["mask"].sum() for batch in batches] == [3, 3, 1]
  assert all(batch["image"].shape == (3, *IMAGE_SHAPE) for batch in batches)
  back = analysis.collect_examples(batches)
  for key in data:
    np.testing.assert_array_equal(back[key], data[key])
  with pytest.raises(ValueError, match="batch_size=0"):
    next(analysis.array_batches(data, 0))
  with pytest.raises(ValueError, match="lacks label"):
    analysis.collect_examples([{"image": data["image"]}])


# Evaluation.


def test_evaluate_matches_the_training_objective_and_ignores_padding():
  model, variables = model_and_variables("glow")
  data = examples(7)
  report = analysis.evaluate(model, variables, analysis.array_batches(data, 4), n_bits=N_BITS)
  metrics = jax.jit(lambda variables, images: objectives.loss_and_metrics(
      model, variables, images, None, None, n_bits=N_BITS)[1])(variables, data["image"])
  assert report["num_examples"] == 7
  np.testing.assert_allclose(report["bits_per_dim"], metrics["bits_per_dim"], rtol=1e-5)
  num_dims = int(np.prod(IMAGE_SHAPE))
  expected_nats = -report["bits_per_dim"] * num_dims * np.log(2)
  np.testing.assert_allclose(report["log_likelihood_nats"], expected_nats, rtol=1e-6)
  assert "accuracy" not in report and "raw_bits_per_dim" not in report


def test_class_scores_of_a_conditional_flow_are_per_class_log_likelihoods():
  model, variables = model_and_variables("bplf", num_classes=NUM_CLASSES)
  x = objectives.dequantize(None, tiny_images(5), N_BITS)
  scores = jax.jit(functools.partial(analysis.class_log_joint, model))(variables, x)
  expected = jax.jit(lambda variables, x: jnp.stack([
      model.apply(variables, x, jnp.full(5, label), method="log_prob")
      for label in range(NUM_CLASSES)], axis=-1))(variables, x)
  np.testing.assert_allclose(scores, expected - np.log(NUM_CLASSES), rtol=1e-5)


def test_classifier_evaluation_uses_its_logits_and_counts_a_confusion_matrix():
  model, variables = model_and_variables("classifier")
  data = examples(7)
  report = analysis.evaluate(model, variables, analysis.array_batches(data, 4), n_bits=N_BITS,
                             class_names=["a", "b", "c"])
  logits = apply(model, variables, objectives.dequantize(None, data["image"], N_BITS),
                 method="class_logits")
  predictions = np.argmax(logits, axis=-1)
  matrix = np.array(report["confusion_matrix"])
  assert matrix.sum() == 7 and matrix.shape == (3, 3)
  for label, prediction in zip(data["label"], predictions):
    assert matrix[label, prediction] >= 1
  np.testing.assert_allclose(report["accuracy"], np.mean(predictions == data["label"]))
  marginal = np.logaddexp.reduce(np.asarray(logits, np.float64), axis=-1)
  expected = np.mean(objectives.bits_per_dim(marginal, 16, N_BITS))
  np.testing.assert_allclose(report["bits_per_dim"], expected, rtol=1e-5)
  given = np.take_along_axis(np.asarray(logits, np.float64) - np.asarray(apply(
      model, variables, method="class_log_prior")), data["label"][:, None], axis=-1)[:, 0]
  np.testing.assert_allclose(report["bits_per_dim_given_label"],
                             np.mean(objectives.bits_per_dim(given, 16, N_BITS)), rtol=1e-5)
  with pytest.raises(ValueError, match="2 names for 3 classes"):
    analysis.evaluate(model, variables, analysis.array_batches(data, 4), n_bits=N_BITS,
                      class_names=["a", "b"])


def test_svd_models_report_truncated_and_raw_images():
  model, variables = model_and_variables("bplf", svd_rank=1)
  data = examples(4)
  report = analysis.evaluate(model, variables, analysis.array_batches(data, 4), n_bits=N_BITS)
  x = objectives.dequantize(None, data["image"], N_BITS)
  raw = apply(model, variables, x, None, method="log_prob")
  np.testing.assert_allclose(report["raw_bits_per_dim"],
                             np.mean(objectives.bits_per_dim(raw, 16, N_BITS)), rtol=1e-5)
  truncated = objectives.dequantize(None, objectives.truncate_images(data["image"], 1, N_BITS),
                                    N_BITS)
  np.testing.assert_allclose(report["bits_per_dim"], np.mean(objectives.bits_per_dim(
      apply(model, variables, truncated, None, method="log_prob"), 16, N_BITS)), rtol=1e-5)
  assert report["raw_bits_per_dim"] != pytest.approx(report["bits_per_dim"], rel=1e-3)


def test_an_svd_model_is_a_density_of_the_truncated_discrete_images():
  # The same flow with and without svd_rank: the SVD model's loss must be the plain flow's loss
  # on the truncated n-bit images with fresh dequantisation noise. Truncating after the noise
  # (the old order) feeds the flow a rank-1 input, a set of measure zero, and gives another value.
  svd_model, variables = model_and_variables("glow", svd_rank=1)
  plain_model = build("glow")
  data = examples(6)
  rng = jax.random.PRNGKey(3)
  loss = lambda model, images: jax.jit(lambda v: objectives.loss_and_metrics(
      model, v, images, None, rng, n_bits=N_BITS)[0])(variables)
  truncated = objectives.truncate_images(data["image"], 1, N_BITS)
  np.testing.assert_allclose(loss(svd_model, data["image"]), loss(plain_model, truncated),
                             rtol=1e-6)
  x = objectives.model_input(svd_model, rng, data["image"], N_BITS)
  # Every pixel stays in its bin of the truncated image, with full-rank uniform noise.
  np.testing.assert_array_equal(objectives.postprocess(x, N_BITS), truncated)
  singular_values = np.linalg.svd(np.moveaxis(np.asarray(x), -1, 1), compute_uv=False)
  assert (singular_values[..., 1] > 1e-3).all()


def test_confusion_matrix_counts_and_checks_its_input():
  matrix = analysis.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
  np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])
  with pytest.raises(ValueError, match=r"predictions must lie in \[0, 3\)"):
    analysis.confusion_matrix(np.array([0]), np.array([3]), 3)


# Sampling, transfer, interpolation.


def test_sample_grids_have_one_row_per_class_and_unconditional_grids_their_shape():
  model, variables = model_and_variables("bplf", num_classes=NUM_CLASSES)
  grids = analysis.class_sample_grids(model, variables, RNG, temperatures=(0.5, 1.0),
                                      samples_per_class=2, n_bits=N_BITS)
  assert sorted(grids) == [0.5, 1.0]
  assert all(grid.shape == (NUM_CLASSES, 2, *IMAGE_SHAPE) and grid.dtype == np.uint8
             for grid in grids.values())
  samples = analysis.unconditional_samples(model, variables, RNG, rows=2, columns=3,
                                           temperature=0.7, n_bits=N_BITS)
  assert samples.shape == (2, 3, *IMAGE_SHAPE)
  with pytest.raises(ValueError, match="unconditional"):
    analysis.class_sample_grids(build("glow"), {}, RNG, temperatures=(1.0,), samples_per_class=1,
                                n_bits=N_BITS)


def test_expression_shift_is_class_mean_minus_mean_of_all_other_examples():
  sums = (np.array([[2.0, 4.0], [3.0, 3.0], [10.0, 0.0]]),)
  counts = np.array([1, 3, 2])
  (shift,) = analysis.ClassLatentSums(sums, counts).expression_shifts()
  np.testing.assert_allclose(shift[0], [2.0, 4.0] - np.array([13.0, 3.0]) / 5, rtol=1e-6)
  np.testing.assert_allclose(shift[2], [5.0, 0.0] - np.array([5.0, 7.0]) / 4, rtol=1e-6)
  with pytest.raises(ValueError, match=r"classes \[1\] have no examples"):
    analysis.ClassLatentSums(sums, np.array([1, 0, 2])).expression_shifts()


def test_class_latent_sums_add_up_each_class_and_skip_padding():
  model, variables = model_and_variables("classifier")
  data = examples(7)
  sums = analysis.class_latent_sums(model, variables, analysis.array_batches(data, 4),
                                    num_classes=NUM_CLASSES, n_bits=N_BITS)
  np.testing.assert_array_equal(sums.counts, np.bincount(data["label"], minlength=NUM_CLASSES))
  x = objectives.dequantize(None, data["image"], N_BITS)
  latents, _ = apply(model, variables, x, jnp.asarray(data["label"]), method="encode")
  for level, z in enumerate(latents):
    for label in range(NUM_CLASSES):
      np.testing.assert_allclose(sums.sums[level][label],
                                 np.sum(np.asarray(z)[data["label"] == label], axis=0),
                                 rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["bplf", "classifier", "glow"])
def test_transfer_without_shift_to_the_own_class_gives_the_input_back(name):
  model, variables = model_and_variables(name, **CONDITIONAL.get(name, {}))
  data = examples(NUM_CLASSES)
  shapes = jax.eval_shape(functools.partial(model.apply, method="encode"), variables,
                          jnp.zeros((1, *IMAGE_SHAPE)),
                          model.conditioning_labels(jnp.zeros(1, jnp.int32)))[0]
  shifts = tuple(np.ones((NUM_CLASSES, *z.shape[1:]), np.float32) for z in shapes)
  kept = analysis.transfer_expressions(model, variables, data["image"], data["label"], shifts,
                                       n_bits=N_BITS, strength=0.0)
  assert kept.shape == (NUM_CLASSES, NUM_CLASSES, *IMAGE_SHAPE)
  expected = objectives.postprocess(objectives.dequantize(None, data["image"], N_BITS), N_BITS)
  for index, label in enumerate(data["label"]):
    np.testing.assert_array_equal(kept[index, label], expected[index])
  moved = analysis.transfer_expressions(model, variables, data["image"], data["label"], shifts,
                                        n_bits=N_BITS)
  assert not np.array_equal(moved, kept)
  zeroed = analysis.transfer_expressions(model, variables, data["image"], data["label"], shifts,
                                         n_bits=N_BITS, zero_deepest=True)
  assert not np.array_equal(zeroed, moved)


def test_zero_deepest_zeroes_the_classifier_fs_z1_not_its_z1_prime():
  # z1' = 0 would decode through h⁻¹(0; y), a z1 that differs by class; f's z1 = 0 does not.
  model, variables = model_and_variables("classifier")
  data = examples(NUM_CLASSES)
  latents = apply(model, variables, objectives.dequantize(None, data["image"], N_BITS),
                  method="encode")[0]
  shifts = tuple(np.zeros((NUM_CLASSES, *z.shape[1:]), np.float32) for z in latents)
  zeroed = analysis.transfer_expressions(model, variables, data["image"], data["label"], shifts,
                                         n_bits=N_BITS, zero_deepest=True)
  expected = objectives.postprocess(apply(model, variables, latents[:-1] + (
      jnp.zeros_like(latents[-1]),), method="decode"), N_BITS)
  for target in range(NUM_CLASSES):
    np.testing.assert_array_equal(zeroed[:, target], expected)


def test_predict_labels_is_bayes_rule_at_the_bin_centres():
  model, variables = model_and_variables("bplf", num_classes=NUM_CLASSES)
  data = examples(5)
  scores = jax.jit(functools.partial(analysis.class_log_joint, model))(
      variables, objectives.dequantize(None, data["image"], N_BITS))
  np.testing.assert_array_equal(analysis.predict_labels(model, variables, data["image"],
                                                        n_bits=N_BITS),
                                np.argmax(scores, axis=-1))


@pytest.mark.parametrize("name", ["bplf", "classifier"])
def test_interpolation_starts_and_ends_at_the_two_images(name):
  model, variables = model_and_variables(name, **CONDITIONAL.get(name, {}))
  data = examples(4)
  lines = analysis.interpolate(model, variables, data["image"][:2], data["label"][:2],
                               data["image"][2:], data["label"][2:], num_points=5, n_bits=N_BITS)
  assert lines.shape == (2, 5, *IMAGE_SHAPE)
  expected = objectives.postprocess(objectives.dequantize(None, data["image"], N_BITS), N_BITS)
  np.testing.assert_array_equal(lines[:, 0], expected[:2])
  np.testing.assert_array_equal(lines[:, -1], expected[2:])
  with pytest.raises(ValueError, match="num_points=1"):
    analysis.interpolate(model, variables, data["image"][:1], data["label"][:1],
                         data["image"][1:2], data["label"][1:2], num_points=1, n_bits=N_BITS)


# Latents and t-SNE.


def test_latent_features_flatten_the_chosen_latent_of_every_real_example():
  model, variables = model_and_variables("classifier")
  data = examples(7)
  features = analysis.latent_features(model, variables, analysis.array_batches(data, 4),
                                      n_bits=N_BITS)
  assert features["features"].shape == (7, 8)  # z1' of 4x4x1 after two levels: 1x1x8.
  np.testing.assert_array_equal(features["label"], data["label"])
  np.testing.assert_array_equal(features["subject"], data["subject"])
  raw = analysis.latent_features(model, variables, analysis.array_batches(data, 4), n_bits=N_BITS,
                                 labels="none")
  assert not np.allclose(raw["features"], features["features"])
  with pytest.raises(ValueError, match="labels='guess'"):
    analysis.latent_features(model, variables, analysis.array_batches(data, 4), n_bits=N_BITS,
                             labels="guess")
  shallow = analysis.latent_features(model, variables, analysis.array_batches(data, 4), level=0,
                                     n_bits=N_BITS)
  assert shallow["features"].shape == (7, 8)  # The first split: 2x2x2.
  with pytest.raises(ValueError, match="level=2"):
    analysis.latent_features(model, variables, analysis.array_batches(data, 4), level=2,
                             n_bits=N_BITS)


@pytest.mark.parametrize("name", ["bplf", "classifier"])
def test_latent_features_do_not_read_the_test_labels_unless_asked(name):
  # By default the features are encoded with the model's own prediction: relabelling the test
  # examples changes nothing in them; only labels="true" (the leak) carries the label in.
  model, variables = model_and_variables(name, **CONDITIONAL.get(name, {}))
  data = examples(8)
  relabelled = dict(data, label=(data["label"] + 1) % NUM_CLASSES)
  features = lambda examples, **kwargs: analysis.latent_features(
      model, variables, analysis.array_batches(examples, 4), n_bits=N_BITS, **kwargs)
  default = features(data)
  np.testing.assert_array_equal(default["features"], features(relabelled)["features"])
  np.testing.assert_array_equal(default["prediction"], analysis.predict_labels(
      model, variables, data["image"], n_bits=N_BITS))
  as_predicted = dict(data, label=default["prediction"])
  np.testing.assert_allclose(features(as_predicted, labels="true")["features"],
                             default["features"], rtol=1e-6)
  assert not np.allclose(features(relabelled, labels="true")["features"], default["features"])


def test_tsne_embeds_in_two_dimensions_and_checks_the_perplexity():
  features = np.random.default_rng(0).normal(size=(20, 5))
  embedding = analysis.tsne_embedding(features, perplexity=5)
  assert embedding.shape == (20, 2) and np.all(np.isfinite(embedding))
  with pytest.raises(ValueError, match="perplexity=30"):
    analysis.tsne_embedding(features, perplexity=30)


# Cross-validation folds.


def test_folds_with_subjects_never_share_a_subject_and_test_every_example_once():
  labels = np.repeat(np.arange(3), 20)
  subjects = np.array([f"p{i % 12}" for i in range(60)])
  folds = analysis.make_folds(labels, subjects, 4, seed=1)
  assert "subject-disjoint" in folds.scheme and "12 subjects" in folds.scheme
  tested = np.concatenate([test for _, test in folds.folds])
  np.testing.assert_array_equal(np.sort(tested), np.arange(60))
  for train, test in folds.folds:
    assert not set(subjects[train]) & set(subjects[test])
    assert len(np.intersect1d(train, test)) == 0


def test_uniform_folds_mix_subjects_and_leave_one_subject_out_holds_out_each():
  labels = np.repeat(np.arange(3), 20)
  subjects = np.array([f"p{i % 6}" for i in range(60)])
  uniform = analysis.make_folds(labels, subjects, 5, protocol="uniform")
  assert "uniform" in uniform.scheme and "subject-dependent" in uniform.scheme
  assert any(set(subjects[train]) & set(subjects[test]) for train, test in uniform.folds)
  for _, test in uniform.folds:
    np.testing.assert_array_equal(np.bincount(labels[test]), [4, 4, 4])
  loso = analysis.make_folds(labels, subjects, 5, protocol="leave_one_subject_out")
  assert len(loso.folds) == 6 and "leave-one-subject-out" in loso.scheme
  assert sorted(np.unique(subjects[test]).item() for _, test in loso.folds) == sorted(
      set(subjects))
  for train, test in loso.folds:
    assert len(train) + len(test) == 60 and subjects[test][0] not in set(subjects[train])
  with pytest.raises(ValueError, match="protocol='random'"):
    analysis.make_folds(labels, subjects, 5, protocol="random")
  with pytest.raises(ValueError, match="60 examples name no subject"):
    analysis.make_folds(labels, [""] * 60, 5, protocol="leave_one_subject_out")


def test_folds_without_subjects_are_stratified_and_say_so():
  labels = np.repeat(np.arange(2), 10)
  folds = analysis.make_folds(labels, [""] * 20, 5)
  assert "class-stratified" in folds.scheme and "no subjects" in folds.scheme
  for _, test in folds.folds:
    np.testing.assert_array_equal(np.bincount(labels[test]), [2, 2])


def test_examples_without_a_subject_are_their_own_groups():
  labels = np.repeat(np.arange(2), 6)
  subjects = np.array(["a", "a", "b", "b", "", ""] * 2)
  folds = analysis.make_folds(labels, subjects, 3)
  assert "4 examples without a subject" in folds.scheme
  for train, test in folds.folds:
    named = set(subjects[train]) & set(subjects[test]) - {""}
    assert not named


def test_fold_errors_name_the_problem():
  with pytest.raises(ValueError, match="only 2 subjects"):
    analysis.make_folds(np.zeros(4, int), ["a", "a", "b", "b"], 3)
  with pytest.raises(ValueError, match="at least 2 folds"):
    analysis.make_folds(np.zeros(4, int), [""] * 4, 1)
  with pytest.raises(ValueError, match="3 entries for 4 labels"):
    analysis.make_folds(np.zeros(4, int), [""] * 3, 2)


def test_summary_is_mean_and_std_over_folds():
  summary = analysis.summarize([0.5, 1.0])
  assert summary == {"mean": 0.75, "std": 0.25, "folds": [0.5, 1.0]}


# Ablation.


def test_ablation_rows_are_the_papers_six_models_of_one_size():
  base = {"name": "glow", "image_shape": IMAGE_SHAPE, "num_classes": 0, "levels": 2,
          "steps_per_level": 1, "width": 8}
  rows = analysis.ablation_rows(base, svd_rank=2)
  assert [row.label for row in rows] == [
      "Glow", "Glow with SVD", "BPLF 3×3 conv", "BPLF 3×3&1×1 conv", "BPLF 3×3 conv with SVD",
      "BPLF 3×3&1×1 conv with SVD"]
  parameters = {}
  for row in rows:
    model = models.create(row.model)
    assert model.levels == 2 and model.steps_per_level == 1
    assert model.svd_rank == (2 if "SVD" in row.label else None)
    variables = jax.eval_shape(functools.partial(model.init, method="log_prob"), RNG,
                               jnp.zeros((1, *IMAGE_SHAPE)))
    parameters[row.slug] = optimization.count_parameters(variables["params"])
  assert parameters["bplf_3x3_1x1"] < parameters["bplf_3x3"]  # 1x1 saves parameters.
  assert parameters["glow"] == parameters["glow_svd"]
  assert [row.slug for row in analysis.ablation_rows(base, 2, only=["glow_svd"])] == ["glow_svd"]
  with pytest.raises(ValueError, match="'additive'"):
    analysis.ablation_rows({**base, "additive": True}, svd_rank=2)
  with pytest.raises(ValueError, match=r"rows \['bplf'\]"):
    analysis.ablation_rows(base, 2, only=["bplf"])


def test_markdown_table_lists_every_row():
  table = analysis.markdown_table([
      {"label": "Glow", "parameters": 1234, "bits_per_dim": 1.5, "seconds": 90},
      {"label": "Glow with SVD", "parameters": 1234, "bits_per_dim": 1.25,
       "raw_bits_per_dim": 1.75, "seconds": 30}])
  lines = table.splitlines()
  assert len(lines) == 4
  assert lines[2] == "| Glow | 1,234 | 1.5000 | 1.5000 | 1.5 min |"
  assert lines[3] == "| Glow with SVD | 1,234 | 1.2500 | 1.7500 | 0.5 min |"


# Figures.


def test_figures_are_written_as_png(tmp_path):
  matrix = np.array([[3, 1], [0, 4]])
  path = analysis.save_confusion_matrix(str(tmp_path / "a" / "confusion.png"), matrix, ["x", "y"])
  embedding = np.random.default_rng(0).normal(size=(6, 2))
  by_subject = analysis.save_embedding(str(tmp_path / "tsne.png"), embedding,
                                       np.array([0, 1, 0, 1, 0, 1]), ["x", "y"],
                                       ["p", "q", "p", "q", "r", "r"])
  by_class = analysis.save_embedding(str(tmp_path / "tsne_classes.png"), embedding,
                                     np.array([0, 1, 0, 1, 0, 1]), ["x", "y"], [""] * 6)
  table = analysis.save_image_table(str(tmp_path / "table.png"), tiny_images(6).reshape(
      2, 3, *IMAGE_SHAPE), ["r1", "r2"], ["c1", "c2", "c3"])
  sizes = {}
  for name, written in (("matrix", path), ("subject", by_subject), ("class", by_class),
                        ("table", table)):
    with Image.open(written) as image:
      assert image.format == "PNG"
      sizes[name] = image.size
  assert sizes["subject"][0] > sizes["class"][0]  # A second panel, by subject.
  with pytest.raises(ValueError, match="for 3 class_names"):
    analysis.save_confusion_matrix(str(tmp_path / "bad.png"), matrix, ["x", "y", "z"])
  with pytest.raises(ValueError, match="1 row and 3 column labels"):
    analysis.save_image_table(str(tmp_path / "bad.png"), tiny_images(6).reshape(
        2, 3, *IMAGE_SHAPE), ["r1"], ["c1", "c2", "c3"])


# Restoring a run.


def tiny_run_config():
  config = digits_bplf.get_config()
  config.model = {"name": "bplf", "image_shape": IMAGE_SHAPE, "num_classes": NUM_CLASSES,
                  "levels": 2, "steps_per_level": 1, "width": 8}
  return config


def save_run(workdir, config, step):
  """A workdir as launch.train leaves it: config.json and one checkpoint of a fresh state."""
  model = models.create(config.model)
  optimizer = optimization.make_optimizer(config.optimizer, config.num_steps)
  batch = {"image": jnp.asarray(tiny_images(4)), "label": jnp.asarray(tiny_labels(4))}
  state = jax.jit(functools.partial(flow.create_train_state, model, optimizer,
                                    n_bits=config.n_bits, use_ema=True))(batch, RNG)
  state = state.replace(step=jnp.asarray(step, jnp.int32),
                        ema_params=jax.tree.map(lambda leaf: leaf + 1.0, state.params))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as file:
    file.write(config.to_json_best_effort(indent=2))
  manager = checkpointing.create_manager(os.path.join(workdir, "checkpoints"),
                                         save_interval_steps=1)
  checkpointing.save(manager, step, state, {"step": step}, force=True)
  manager.wait_until_finished()
  manager.close()
  return state


def test_load_trained_restores_the_model_and_the_averaged_parameters(tmp_path):
  config = tiny_run_config()
  state = save_run(str(tmp_path), config, step=7)
  run = flow.load_trained(str(tmp_path))
  assert run.step == 7 and isinstance(run.model, models.BPLF)
  assert run.config.model.num_classes == NUM_CLASSES
  for restored, saved in zip(jax.tree.leaves(run.variables["params"]),
                             jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(restored, saved)
  raw = flow.load_trained(str(tmp_path), use_ema=False)
  for restored, saved in zip(jax.tree.leaves(raw.variables["params"]),
                             jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(restored, saved)
  with pytest.raises(ValueError, match=r"step=3: .* has the steps \[7\]"):
    flow.load_trained(str(tmp_path), step=3)


def test_load_trained_errors_name_the_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json; train into it first"):
    flow.load_trained(str(tmp_path))
  (tmp_path / "config.json").write_text('{"model": ')
  with pytest.raises(ValueError, match=r"config.json:1: not valid JSON"):
    flow.load_trained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps(tiny_run_config().to_dict()))
  with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
    flow.load_trained(str(tmp_path))

"""The CNN baseline: its model, and its task trained through the shared loop and loaded back."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flaxflow import loop, parallel, tasks
from flaxflow.tasks import cnn
from flaxflow.workdir import Workdir
from test_training import toy_config, toy_dataset
from training_helpers import ArrayIterator, RecordingWriter

MODEL = dict(name="cnn", image_shape=(4, 4, 1), num_classes=3, widths=(4, 8), dense_width=8)


def test_cnn_gives_logits_per_class_and_checks_its_input():
  model = cnn.create_model(ml_collections.ConfigDict(MODEL))
  x = jnp.zeros((2, 4, 4, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert model.apply(variables, x).shape == (2, 3) and model.is_classifier
  with pytest.raises(ValueError, match="image_shape"):
    model.apply(variables, jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match="does not take"):
    cnn.create_model(ml_collections.ConfigDict(dict(MODEL, levels=2)))


def test_loss_is_the_cross_entropy_of_the_logits():
  model = cnn.create_model(ml_collections.ConfigDict(MODEL))
  images, labels = toy_dataset(8)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
  loss, metrics = cnn.loss_and_metrics(model, variables, images, labels, None, n_bits=8)
  logits = model.apply(variables, (images.astype(np.float32) + 0.5) / 256 - 0.5)
  log_softmax = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(loss, -np.mean(log_softmax[np.arange(8), labels]), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(logits, -1) == labels))


@pytest.mark.slow
def test_cnn_trains_through_the_loop_and_loads_back(tmp_path):
  config = toy_config(num_steps=30, checkpoint_every=30, sample_every=0)
  config.model = ml_collections.ConfigDict(MODEL)
  config.dataset = "toy"
  mesh = parallel.make_mesh()
  images, labels = toy_dataset()
  eval_images, eval_labels = toy_dataset(num_examples=32, seed=1)
  task = tasks.family_of(config).create_task(
      config, mesh, image_shape=(4, 4, 1), class_names=["a", "b", "c"],
      eval_batches=lambda: iter([{"image": eval_images, "label": eval_labels}]))
  workdir = Workdir(str(tmp_path))
  workdir.write_config(config)
  result = loop.train(task, config, train_iterator=ArrayIterator(
      images, labels, global_batch_size=16, sharding=parallel.batch_sharding(mesh)),
                      workdir=workdir, writer=RecordingWriter(), mesh=mesh)
  assert result.eval_metrics["accuracy"] > 0.9  # Brightness tells the classes apart.
  final = workdir.read_final_metrics()
  assert set(final["eval"]) == {"loss", "class_loss", "accuracy"}
  assert not (tmp_path / "samples").exists() or not list((tmp_path / "samples").iterdir())
  trained = tasks.load_trained(str(tmp_path), use_ema=False)
  x = jnp.zeros((2, 4, 4, 1))
  np.testing.assert_allclose(trained.model.apply(trained.variables, x),
                             task.model.apply({"params": result.state.params}, x), rtol=1e-5)

"""Table I's classifiers on latents and on their joint t-SNE embedding."""

import numpy as np
import pytest

from flaxflow.analysis import latent_classifiers


def clusters(count, seed):
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % 3
  return rng.normal(size=(count, 6)) + 6.0 * np.eye(3, 6)[labels], labels


def test_every_classifier_separates_clusters_and_none_reads_noise():
  train, train_labels = clusters(90, 0)
  test, test_labels = clusters(30, 1)
  accuracies = latent_classifiers.classifier_accuracies(train, train_labels, test, test_labels)
  assert set(accuracies) == set(latent_classifiers.CLASSIFIERS)
  assert min(accuracies.values()) > 0.9
  shuffled = np.random.default_rng(2).permutation(train_labels)
  noise = latent_classifiers.classifier_accuracies(train, shuffled, test, test_labels)
  assert max(noise.values()) < 0.7  # Labels unrelated to the features: near chance (1/3).
  with pytest.raises(ValueError, match="differ in their dimensions"):
    latent_classifiers.classifier_accuracies(train, train_labels, test[:, :2], test_labels)


def test_joint_tsne_splits_the_embedding_back_and_keeps_clusters():
  train, train_labels = clusters(60, 0)
  test, test_labels = clusters(30, 1)
  train_2d, test_2d = latent_classifiers.joint_tsne(train, test, perplexity=10)
  assert train_2d.shape == (60, 2) and test_2d.shape == (30, 2)
  accuracies = latent_classifiers.classifier_accuracies(train_2d, train_labels, test_2d,
                                                        test_labels)
  assert accuracies["random_forest"] > 0.9


def test_table_rows_put_the_flow_first_and_name_every_classifier():
  names = latent_classifiers.CLASSIFIERS
  rows = latent_classifiers.table_rows({name: 0.5 for name in names},
                                       {name: 0.25 for name in names}, 0.875, "flow")
  assert rows[0] == {"data": "z (latent)", "classifier": "flow", "accuracy": 0.875}
  assert [row["classifier"] for row in rows[1:5]] == list(names.values())
  assert all(row["accuracy"] == 0.25 for row in rows[1:5])
  table = latent_classifiers.markdown_table(rows)
  assert "| t-SNE embeddings | Random Forest | 25.00% |" in table and "| flow | 87.50% |" in table
  with pytest.raises(ValueError, match="'svm'"):
    latent_classifiers.make_classifier("svm")

"""The classifier paper's Table I: off-the-shelf classifiers (scikit-learn's random forest, extra
trees, AdaBoost and decision tree) fitted on a flow's latents and on their t-SNE embedding.

Each classifier is fitted on the training examples and scored on the test examples. t-SNE has no
map for new points, so training and test latents are embedded together (`joint_tsne`): no label
enters the embedding, but the test points' places depend on the training points (transductive).
"""

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import sklearn.ensemble
import sklearn.tree

from flaxflow.analysis import embedding

CLASSIFIERS = {
    "random_forest": "Random Forest",
    "extra_trees": "Extra Trees",
    "adaboost": "AdaBoost",
    "decision_tree": "Decision Tree",
}


def make_classifier(name: str, seed: int = 0):
  """A fresh scikit-learn classifier of `CLASSIFIERS`, with scikit-learn's defaults."""
  factories = {
      "random_forest": lambda: sklearn.ensemble.RandomForestClassifier(random_state=seed),
      "extra_trees": lambda: sklearn.ensemble.ExtraTreesClassifier(random_state=seed),
      "adaboost": lambda: sklearn.ensemble.AdaBoostClassifier(random_state=seed),
      "decision_tree": lambda: sklearn.tree.DecisionTreeClassifier(random_state=seed),
  }
  if name not in factories:
    raise ValueError(f"classifier {name!r}: expected one of {', '.join(CLASSIFIERS)}")
  return factories[name]()


def classifier_accuracies(train_features: np.ndarray, train_labels: np.ndarray,
                          test_features: np.ndarray, test_labels: np.ndarray,
                          seed: int = 0) -> Dict[str, float]:
  """{classifier: test accuracy} of every one of `CLASSIFIERS` fitted on the training rows."""
  if train_features.shape[1:] != test_features.shape[1:]:
    raise ValueError(f"training features {train_features.shape} and test features "
                     f"{test_features.shape} differ in their dimensions")
  accuracies = {}
  for name in CLASSIFIERS:
    classifier = make_classifier(name, seed)
    classifier.fit(train_features, train_labels)
    accuracies[name] = float(classifier.score(test_features, test_labels))
  return accuracies


def joint_tsne(train_features: np.ndarray, test_features: np.ndarray, *, perplexity: float,
               seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """The 2-D t-SNE embedding of training and test features together, split back."""
  both = embedding.tsne_embedding(np.concatenate([train_features, test_features]),
                                  perplexity=perplexity, seed=seed)
  return both[:len(train_features)], both[len(train_features):]


def table_rows(latent_accuracies: Mapping[str, float], tsne_accuracies: Mapping[str, float],
               flow_accuracy: float, flow_name: str) -> List[Dict[str, object]]:
  """Table I's rows: the flow's own accuracy, then each classifier on the t-SNE embedding and on
  the raw latents."""
  rows = [{"data": "z (latent)", "classifier": flow_name, "accuracy": flow_accuracy}]
  for data, accuracies in (("t-SNE embeddings", tsne_accuracies),
                           ("z (latent)", latent_accuracies)):
    rows += [{"data": data, "classifier": CLASSIFIERS[name], "accuracy": accuracies[name]}
             for name in CLASSIFIERS]
  return rows


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
  lines = ["| data | classifier | test accuracy |", "|---|---|---|"]
  lines += [f"| {row['data']} | {row['classifier']} | {100 * row['accuracy']:.2f}% |"
            for row in rows]
  return "\n".join(lines)

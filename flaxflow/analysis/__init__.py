"""Research tools on trained flows: evaluation, sampling, expression transfer, t-SNE,
cross-validation and the BPLF ablation. The entry points in `launch/` feed them data and write what
they return.
"""

from flaxflow.analysis.ablation import AblationRow, ablation_rows, count_parameters, markdown_table
from flaxflow.analysis.batches import array_batches, collect_examples, map_batches
from flaxflow.analysis.checkpoints import (CONFIG_FILE, TrainedModel, load_trained, read_config,
                                           restore_state)
from flaxflow.analysis.cross_validation import Folds, make_folds, summarize
from flaxflow.analysis.embedding import latent_features, tsne_embedding
from flaxflow.analysis.evaluation import (class_log_joint, confusion_matrix, evaluate,
                                          evaluation_report, example_scores, has_svd,
                                          is_class_conditional, score_examples)
from flaxflow.analysis.figures import save_confusion_matrix, save_embedding, save_image_table
from flaxflow.analysis.generation import (ClassLatentSums, class_latent_sums, class_sample_grids,
                                          interpolate, transfer_expressions,
                                          unconditional_samples)

__all__ = [
    "CONFIG_FILE", "AblationRow", "ClassLatentSums", "Folds", "TrainedModel", "ablation_rows",
    "array_batches",
    "class_latent_sums", "class_log_joint", "class_sample_grids", "collect_examples",
    "confusion_matrix", "count_parameters", "evaluate", "evaluation_report", "example_scores",
    "has_svd", "interpolate", "is_class_conditional", "latent_features", "load_trained",
    "make_folds", "map_batches", "markdown_table", "read_config", "restore_state",
    "save_confusion_matrix", "save_embedding", "save_image_table", "score_examples", "summarize",
    "transfer_expressions", "tsne_embedding", "unconditional_samples",
]

"""Research tools on trained models (`flaxflow.tasks.load_trained` loads any family's run):
evaluation, sampling, expression transfer, t-SNE, cross-validation and the BPLF ablation for the
flows; a trained DECGAN at work (`decgan_inference`) and IF-GAN's ground truth
(`ifgan_ground_truth`) for the GANs. The entry points in `launch/` feed them data and write what
they return.
"""

from flaxflow.analysis.ablation import AblationRow, ablation_rows, markdown_table, row_config
from flaxflow.analysis.batches import array_batches, collect_examples, map_batches
from flaxflow.analysis.cross_validation import PROTOCOLS, Folds, make_folds, summarize
from flaxflow.analysis.embedding import LABEL_SOURCES, latent_features, tsne_embedding
from flaxflow.analysis.evaluation import (class_log_joint, confusion_matrix, evaluate,
                                          evaluation_report, example_scores, mean_example_metrics,
                                          predict_labels, score_examples)
from flaxflow.analysis.figures import save_confusion_matrix, save_embedding, save_image_table
from flaxflow.analysis.generation import (ClassLatentSums, class_latent_sums, class_sample_grids,
                                          interpolate, sample_grid, transfer_expressions,
                                          unconditional_samples)

__all__ = [
    "AblationRow", "ClassLatentSums", "LABEL_SOURCES", "PROTOCOLS", "Folds", "ablation_rows",
    "array_batches",
    "class_latent_sums", "class_log_joint", "class_sample_grids", "collect_examples",
    "confusion_matrix", "evaluate", "evaluation_report", "example_scores", "interpolate",
    "latent_features", "make_folds", "map_batches", "markdown_table", "mean_example_metrics",
    "predict_labels", "row_config", "sample_grid", "save_confusion_matrix", "save_embedding",
    "save_image_table",
    "score_examples", "summarize", "transfer_expressions", "tsne_embedding",
    "unconditional_samples",
]

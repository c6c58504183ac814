"""Linear probes of a trained run's latents on its training subjects, for `launch.tsne`."""

from typing import Any, Dict, List

import numpy as np

from flaxflow.analysis import probes
from flaxflow.tasks.trained import TrainedModel
from flaxflow.launch import research


def probe_training_subjects(run: TrainedModel, num_subjects: int) -> List[Dict[str, Any]]:
  """`probes.latent_probes` on the images of the first `num_subjects` subjects of the training
  split (in name order), half of each one's images to fit on and half to test on; each row also
  gives the number of subjects probed."""
  if num_subjects < 2:
    raise ValueError(f"num_subjects={num_subjects}: a subject probe needs at least 2 subjects")
  examples, _ = research.split_examples(run.config, "train")
  named = np.unique(examples["subject"][examples["subject"] != ""])
  if len(named) < 2:
    raise ValueError(f"{run.config.dataset} train names {len(named)} subject(s): nothing to probe")
  probed = named[:num_subjects]
  keep = np.isin(examples["subject"], probed)
  rows = probes.latent_probes(run.model, run.variables,
                              {key: values[keep] for key, values in examples.items()},
                              n_bits=run.config.n_bits, batch_size=run.config.eval_batch_size)
  return [{**row, "subjects": len(probed)} for row in rows]


def format_probes(rows: List[Dict[str, Any]], num_classes: int) -> str:
  num_subjects = rows[0]["subjects"]
  lines = [f"linear probes on {num_subjects} training subjects' held-out images (chance: "
           f"expression {100 / num_classes:.1f}%, subject {100 / num_subjects:.1f}%):"]
  lines += [f"  latent {row['level']} ({row['dimensions']} dimensions): expression "
            f"{100 * row['expression_accuracy']:.1f}%, subject {100 * row['subject_accuracy']:.1f}%"
            for row in rows]
  return "\n".join(lines)

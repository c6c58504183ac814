"""t-SNE of a trained run's latents: `python -m launch.tsne --workdir W`.

Embeds one latent per image (default the deepest: z1' = h(z1, ŷ) for the classifier, ŷ its own
prediction) of the test split and writes W/analysis/tsne_level<L>.png, coloured by class and, where
the dataset names subjects, by subject (`--labels=none`: the classifier's raw z1,
tsne_level<L>_unlabelled.png; `--labels=true`, which leaks the test labels into the features:
tsne_level<L>_true_labels.png). Where the
training split names subjects it also prints, per latent level, the accuracy of linear probes of
expression and of subject (launch/probing.py) and writes W/analysis/probes.json.
"""

from absl import app, flags

from flaxflow import analysis
from flaxflow.launch import probing, research, runs

_RUN = research.define_run_flags()

_SPLIT = flags.DEFINE_string("split", None, "Split to embed (default: the run's eval_split).")
_LATENT = research.define_latent_flags()
_PERPLEXITY = flags.DEFINE_float("perplexity", 30.0, "t-SNE perplexity.")
_SEED = flags.DEFINE_integer("seed", 0, "t-SNE seed.")
_PROBE_SUBJECTS = flags.DEFINE_integer("probe_subjects", 30, "Training subjects the linear probes "
                                       "read expression and subject on; 0: no probes.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  run, split, batches, info = research.start_on_split(_RUN, _SPLIT)
  level, labels = _LATENT.level.value, _LATENT.labels.value
  latents = analysis.latent_features(run.model, run.variables, batches(), level=level,
                                     labels=labels,
                                     n_bits=run.config.n_bits)
  embedding = analysis.tsne_embedding(latents["features"], perplexity=_PERPLEXITY.value,
                                      seed=_SEED.value)
  title = (f"{run.config.dataset} {split}, step {run.step}: t-SNE of latent {level} "
           f"({latents['features'].shape[1]} dimensions, {len(embedding)} images)")
  name = f"tsne_level{level}" + {"predicted": "", "none": "_unlabelled",
                                 "true": "_true_labels"}[labels]
  path = analysis.save_embedding(research.output_path(_RUN, f"{name}.png"), embedding,
                                 latents["label"], info.class_names, latents["subject"], title)
  if not (latents["subject"] != "").any():
    print(f"{run.config.dataset} names no subjects: coloured by class only")
  elif _PROBE_SUBJECTS.value:
    rows = probing.probe_training_subjects(run, _PROBE_SUBJECTS.value)
    print(probing.format_probes(rows, len(info.class_names)))
    print(f"wrote {research.write_json(research.output_path(_RUN, 'probes.json'), rows)}")
  print(f"wrote {path}")


if __name__ == "__main__":
  runs.run_main(main)

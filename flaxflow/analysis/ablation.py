"""The BPLF paper's ablation (its Table 3): Glow and BPLF with and without SVD truncation.

Every row shares the base model's size (levels, steps per level, width, classes) and is trained with
the same config (steps, batch, optimizer); only the step type, BPLF's g and the SVD rank differ.
"""

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence

import ml_collections

# (slug, label, model name, BPLF g, with SVD)
_TABLE_3 = (
    ("glow", "Glow", "glow", None, False),
    ("glow_svd", "Glow with SVD", "glow", None, True),
    ("bplf_3x3", "BPLF 3×3 conv", "bplf", "3x3", False),
    ("bplf_3x3_1x1", "BPLF 3×3&1×1 conv", "bplf", "3x3-1x1", False),
    ("bplf_3x3_svd", "BPLF 3×3 conv with SVD", "bplf", "3x3", True),
    ("bplf_3x3_1x1_svd", "BPLF 3×3&1×1 conv with SVD", "bplf", "3x3-1x1", True),
)
# Each row's result in its run folder (written by launch.ablate, read by launch.plot_curves).
ROW_FILE = "ablation_row.json"
SHARED_FIELDS = ("image_shape", "num_classes", "levels", "steps_per_level", "width", "gradient")


@dataclasses.dataclass(frozen=True)
class AblationRow:
  slug: str  # Folder name of the row's run.
  label: str  # The row's name in the paper's table.
  model: Dict[str, Any]  # A `flaxflow.models.create` config.


def ablation_rows(base_model: Mapping[str, Any], svd_rank: int,
                  only: Sequence[str] = ()) -> List[AblationRow]:
  """The six rows built on `base_model`'s shared fields (`SHARED_FIELDS`), or those in `only`."""
  unknown = sorted(set(base_model) - set(SHARED_FIELDS) - {"name"})
  if unknown:
    raise ValueError(f"base model fields {unknown} are not shared by Glow and BPLF; the ablation "
                     f"takes only {', '.join(SHARED_FIELDS)}")
  if not isinstance(svd_rank, int) or svd_rank < 1:
    raise ValueError(f"svd_rank={svd_rank!r}: expected a positive integer")
  slugs = [row[0] for row in _TABLE_3]
  missing = sorted(set(only) - set(slugs))
  if missing:
    raise ValueError(f"rows {missing}: expected some of {', '.join(slugs)}")
  shared = {name: value for name, value in base_model.items() if name != "name"}
  rows = []
  for slug, label, name, g_variant, with_svd in _TABLE_3:
    if only and slug not in only:
      continue
    model = dict(shared, name=name)
    if g_variant is not None:
      model["g_variant"] = g_variant
    if with_svd:
      model["svd_rank"] = svd_rank
    rows.append(AblationRow(slug, label, model))
  return rows


def row_config(config: ml_collections.ConfigDict,
               row: AblationRow) -> ml_collections.ConfigDict:
  """The config one row trains with: the ablation config with the row's model."""
  config = config.copy_and_resolve_references()
  config.model = ml_collections.ConfigDict(row.model)
  return config


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
  """Rows {"label", "parameters", "bits_per_dim", "raw_bits_per_dim" (SVD rows), "seconds"}."""
  lines = ["| method | parameters | test bits/dim (the model's data: SVD rows truncated) "
           "| test bits/dim (raw images) "
           "| training time |",
           "|---|---|---|---|---|"]
  for result in results:
    raw = result.get("raw_bits_per_dim", result["bits_per_dim"])
    lines.append(f"| {result['label']} | {result['parameters']:,} | {result['bits_per_dim']:.4f} "
                 f"| {raw:.4f} | {result['seconds'] / 60:.1f} min |")
  return "\n".join(lines)

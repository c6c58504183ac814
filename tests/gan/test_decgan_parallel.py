"""DECGAN's data-parallel step: 8 simulated devices follow the one-device trajectory (pairs,
history buffer and losses are computed on the global batch, so only summation order differs)."""

import textwrap

import numpy as np
import pytest
from training_helpers import run_on_simulated_devices


# Trains the tiny DECGAN of test_decgan for 4 steps through the loop; prints losses and every
# parameter and history value as JSON.
_WORKER = textwrap.dedent("""
    import json, sys
    sys.path[:0] = ["tests", "tests/gan"]
    from flaxflow import parallel
    parallel.select_platform("cpu")
    import jax
    import numpy as np
    from test_decgan import run_loop, tiny_config

    result, writer = run_loop(sys.argv[1], tiny_config(num_steps=4, checkpoint_every=4))
    leaves = jax.tree.leaves((result.state.params, result.state.extra))
    values = np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves])
    print("RESULT " + json.dumps({
        "devices": jax.device_count(), "values": values.tolist(),
        "losses": [writer.scalars[step]["train/loss"] for step in range(1, 5)],
        "cycle": [writer.scalars[step]["train/loss/cycle"] for step in range(1, 5)]}))
""")


@pytest.mark.slow
def test_eight_devices_follow_the_one_device_trajectory(tmp_path):
  one, eight = (run_on_simulated_devices(_WORKER, tmp_path / name, devices)
                for name, devices in (("one", 1), ("eight", 8)))
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=2e-5)
  np.testing.assert_allclose(eight["cycle"], one["cycle"], rtol=2e-5)
  # Every parameter and history value, not sums of them: summation order moves each by float
  # noise that Adam's normalised steps carry (1.5e-4 at most here), and an update that went the
  # other way would move one by two steps of the learning rate (2e-3).
  np.testing.assert_allclose(eight["values"], one["values"], rtol=0, atol=5e-4)

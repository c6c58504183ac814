"""DECGAN's data-parallel step: 8 simulated devices follow the one-device trajectory (pairs,
history buffer and losses are computed on the global batch, so only summation order differs)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Trains the tiny DECGAN of test_decgan for 4 steps through the loop; prints losses and the sum
# of every parameter as JSON.
_WORKER = textwrap.dedent("""
    import json, sys
    sys.path[:0] = ["tests", "tests/gan"]
    from flaxflow import parallel
    parallel.select_platform("cpu")
    import jax
    import numpy as np
    from test_decgan import run_loop, tiny_config

    result, writer = run_loop(sys.argv[1], tiny_config(num_steps=4, checkpoint_every=4))
    sums = [float(np.asarray(leaf, np.float64).sum())
            for leaf in jax.tree.leaves((result.state.params, result.state.extra))]
    print("RESULT " + json.dumps({
        "devices": jax.device_count(), "params": sums,
        "losses": [writer.scalars[step]["train/loss"] for step in range(1, 5)],
        "cycle": [writer.scalars[step]["train/loss/cycle"] for step in range(1, 5)]}))
""")


def _run(workdir, devices):
  environment = dict(os.environ, JAX_PLATFORMS="cpu",
                     XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  process = subprocess.run([sys.executable, "-c", _WORKER, str(workdir)], cwd=REPO_ROOT,
                           env=environment, capture_output=True, text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_eight_devices_follow_the_one_device_trajectory(tmp_path):
  one, eight = _run(tmp_path / "one", 1), _run(tmp_path / "eight", 8)
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=2e-5)
  np.testing.assert_allclose(eight["cycle"], one["cycle"], rtol=2e-5)
  np.testing.assert_allclose(eight["params"], one["params"], rtol=1e-4, atol=1e-4)

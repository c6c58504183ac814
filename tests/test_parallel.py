"""Tests of flaxflow.parallel, and SPMD training on 8 simulated devices and on 2 processes."""

import os
import socket
import sys
import textwrap

import jax
import numpy as np
import pytest

from flaxflow import parallel
from training_helpers import run_together


@pytest.mark.parametrize("environ, expected", [
    ({}, False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1"}, True),
    ({"TPU_PROCESS_ADDRESSES": "a:1,b:1", "TPU_WORKER_HOSTNAMES": "a"}, True),
])
def test_multihost_is_detected_from_the_environment(environ, expected):
  assert parallel.is_multihost(environ=environ) is expected


def test_explicit_settings_mean_multihost():
  assert parallel.is_multihost(num_processes=2, environ={})
  assert parallel.is_multihost(process_id=0, environ={})


def test_one_process_does_not_start_the_distributed_service(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    monkeypatch.delenv(name, raising=False)
  assert not parallel.initialize_distributed()


def test_unknown_accelerator_is_named():
  with pytest.raises(ValueError, match="accelerator='npu'"):
    parallel.select_platform("npu")


def test_mesh_splits_the_batch_and_replicates_the_rest():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == (parallel.DATA_AXIS,) and mesh.size == jax.device_count()
  batch = parallel.global_batch_from_full({"x": np.arange(8.0).reshape(4, 2)},
                                          parallel.batch_sharding(mesh))
  np.testing.assert_array_equal(batch["x"], np.arange(8.0).reshape(4, 2))
  assert batch["x"].sharding.spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  assert parallel.replicated_sharding(mesh).spec == jax.sharding.PartitionSpec()
  with pytest.raises(ValueError, match="batch_size=3"):
    parallel.check_batch_size(3, parallel.make_mesh(jax.devices() * 2))


# Trains a tiny class-conditional BPLF for a few steps and prints the loss trajectory as JSON.
# Every process holds the same global batches but feeds only its own rows, as on a pod.
_WORKER = textwrap.dedent("""
    import json, sys
    from flaxflow import parallel
    parallel.select_platform("cpu")
    workdir, num_processes, process_id, address = sys.argv[1], *map(int, sys.argv[2:4]), sys.argv[4]
    if num_processes > 1:
      parallel.initialize_distributed(address, num_processes, process_id)

    import jax
    import ml_collections
    import numpy as np
    from flaxflow import loop, models
    from flaxflow.tasks.flow import FlowTask
    from flaxflow.workdir import Workdir

    GLOBAL_BATCH = 16

    class LocalRows:
      def __init__(self, images, labels, sharding):
        self.images, self.labels, self.sharding, self.drawn = images, labels, sharding, 0
      def __next__(self):
        chosen = np.random.default_rng([0, self.drawn]).choice(len(self.images), GLOBAL_BATCH,
                                                              replace=False)
        per_process = GLOBAL_BATCH // jax.process_count()
        mine = chosen[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
        self.drawn += 1
        return parallel.global_batch_from_local(
            {"image": self.images[mine], "label": self.labels[mine]}, self.sharding)
      def get_state(self):
        return {"drawn": self.drawn}
      def set_state(self, state):
        self.drawn = state["drawn"]

    class Recorder:
      losses = {}
      def write_scalars(self, step, scalars):
        if "train/loss" in scalars:
          self.losses[step] = scalars["train/loss"]
      def flush(self):
        pass

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 64).astype(np.int32)
    images = np.clip(40 + 60 * labels[:, None, None, None] + rng.normal(0, 30, (64, 8, 8, 1)),
                     0, 255).astype(np.uint8)
    config = ml_collections.ConfigDict(dict(
        seed=0, n_bits=5, batch_size=GLOBAL_BATCH, eval_batch_size=GLOBAL_BATCH, num_steps=5,
        class_loss_weight=0.3,
        ema_decay=0.9, optimizer=dict(name="adamax", learning_rate=1e-2, warmup_steps=2,
                                      schedule="constant", grad_clip_norm=50.0, b1=0.9,
                                      b2=0.999, eps=1e-8),
        log_every=1, checkpoint_every=2, keep_checkpoints=2, sample_every=0, samples_per_class=2,
        sample_temperature=0.7, eval_every=0, max_consecutive_nonfinite=3))
    model = models.create(ml_collections.ConfigDict(dict(
        name="bplf", image_shape=(8, 8, 1), num_classes=3, levels=1, steps_per_level=2, width=8)))
    mesh = parallel.make_mesh()
    recorder = Recorder()
    result = loop.train(FlowTask(config, model, mesh, ["a", "b", "c"]), config,
                        workdir=Workdir(workdir), writer=recorder, mesh=mesh,
                        train_iterator=LocalRows(images, labels, parallel.batch_sharding(mesh)))
    params = jax.tree.map(lambda leaf: float(np.asarray(leaf, np.float64).sum()),
                          jax.tree.leaves(result.state.params))
    print("RESULT " + json.dumps({"devices": jax.device_count(), "losses": recorder.losses,
                                  "params": params}))
""")


def _free_port():
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def _train(workdir, devices_per_process, num_processes=1):
  """The results of the worker's processes, each on `devices_per_process` simulated devices."""
  environment = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count="
                                           f"{devices_per_process}", JAX_PLATFORMS="cpu")
  address = f"localhost:{_free_port()}" if num_processes > 1 else ""
  return run_together([[sys.executable, "-c", _WORKER, str(workdir), str(num_processes),
                        str(process_id), address] for process_id in range(num_processes)],
                      environment)


def _assert_same_training(reference, other):
  assert list(reference["losses"]) == list(other["losses"]) == ["1", "2", "3", "4", "5"]
  np.testing.assert_allclose(list(other["losses"].values()), list(reference["losses"].values()),
                             rtol=2e-5)
  np.testing.assert_allclose(other["params"], reference["params"], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  return _train(tmp_path_factory.mktemp("one_device"), 1)[0]


@pytest.mark.slow
def test_eight_devices_follow_the_one_device_trajectory(one_device_run, tmp_path):
  eight = _train(tmp_path, 8)[0]
  assert one_device_run["devices"] == 1 and eight["devices"] == 8
  _assert_same_training(one_device_run, eight)


@pytest.mark.slow
def test_two_processes_follow_the_one_device_trajectory(one_device_run, tmp_path):
  first, second = _train(tmp_path, 2, num_processes=2)
  assert first["devices"] == second["devices"] == 4
  _assert_same_training(one_device_run, first)
  assert first == second
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "5"]

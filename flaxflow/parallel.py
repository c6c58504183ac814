"""Platform choice, multi-host start-up, and the data-parallel device mesh with its shardings.

Training is SPMD data parallelism: one 1-D mesh over every device of every process, the batch split
along its "data" axis and the train state replicated; `jax.jit` inserts the gradient all-reduce.
"""

import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
ACCELERATORS = ("cpu", "gpu", "tpu")
_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_TPU_HOSTS_ENV = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


def select_platform(accelerator: str) -> None:
  """Restricts JAX to `accelerator`; must run before anything touches a device."""
  if accelerator not in ACCELERATORS:
    raise ValueError(f"accelerator={accelerator!r}: expected one of {ACCELERATORS}")
  jax.config.update("jax_platforms", accelerator)
  if accelerator == "cpu":
    # Cross-process collectives on CPU need an implementation; gloo ships with jaxlib.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


class PlatformError(RuntimeError):
  """The machine has no devices of the platform asked for."""


def check_devices(accelerator: str) -> list:
  """All devices of `accelerator`, or an error saying that this machine has none."""
  try:
    devices = jax.devices()
  except RuntimeError as error:
    raise PlatformError(f"--accelerator={accelerator}: JAX found no {accelerator} devices on "
                        f"this machine ({error})") from None
  if devices[0].platform != accelerator:
    raise RuntimeError(f"--accelerator={accelerator}: JAX runs on {devices[0].platform}, not "
                       f"{accelerator}; select the platform before any device is used")
  return devices


def is_tpu_pod(environ: Mapping[str, str]) -> bool:
  """Whether the Cloud TPU environment names more than one worker host."""
  for name in _TPU_HOSTS_ENV:
    hosts = [host for host in environ.get(name, "").split(",") if host.strip()]
    if hosts:
      return len(hosts) > 1
  return False


def is_multihost(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                 process_id: Optional[int] = None,
                 environ: Optional[Mapping[str, str]] = None) -> bool:
  """Whether this process is one of several: explicit settings, JAX_* variables, or a TPU pod."""
  environ = os.environ if environ is None else environ
  explicit = (coordinator_address, num_processes, process_id)
  if any(value is not None for value in explicit):
    return True
  return any(environ.get(name) for name in _COORDINATOR_ENV) or is_tpu_pod(environ)


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> bool:
  """Calls `jax.distributed.initialize` when multi-host (settings left None are auto-detected).

  Returns whether it did. Must run after `select_platform` and before any device is used.
  """
  if not is_multihost(coordinator_address, num_processes, process_id):
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes) along `DATA_AXIS`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh, other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  if global_batch_size % mesh.size:
    raise ValueError(f"batch_size={global_batch_size} must be divisible by the number of devices "
                     f"({mesh.size}) so that every device gets the same share")


def global_batch_from_full(batch: Mapping[str, Any], sharding: NamedSharding) -> dict:
  """Global arrays from host arrays that every process holds in full (e.g. an evaluation batch)."""

  def to_global(array):
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

  return {name: to_global(array) for name, array in batch.items()}


def global_batch_from_local(batch: Mapping[str, Any], sharding: NamedSharding) -> dict:
  """Global arrays from this process's own slice of a batch (each process feeds its shard)."""
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(array))
          for name, array in batch.items()}


def traced_mesh_axis_size(axis: str = DATA_AXIS) -> int:
  """The size of `axis` of the mesh that the function being traced runs on (the abstract mesh
  that `flaxflow.loop.jit_train_step` enters), 1 outside such a mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else dict(mesh.shape).get(axis, 1)


def traced_platform() -> str:
  """The platform that the function being traced is compiled for: that of the mesh it runs on
  (which may be compile-only devices of another kind than this host's, `flaxflow.aot`), else
  JAX's default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return jax.default_backend() if device is None else device.platform


def is_primary() -> bool:
  """Whether this process writes logs, images and other single-copy outputs."""
  return jax.process_index() == 0

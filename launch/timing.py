"""Wall-clock timing shared by the benchmarks (no JAX: the PyTorch peer's process uses it too)."""

import time
from typing import Callable, List


def wall_times(run: Callable[[], object], repeats: int) -> List[float]:
  """The wall time in seconds of each of `repeats` calls of `run`."""
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
  return seconds

"""Train-step throughput of the PyTorch peer: a class-conditional Glow built from `normflows`.

The model follows normflows' own multiscale Glow recipe: per level K `GlowBlock`s (ActNorm,
LU-parametrised invertible 1x1 convolution, affine coupling with a conv3x3 -> conv1x1 -> conv3x3
network of the given hidden width and a sigmoid scale) and a `Squeeze`; a `Merge` (the split,
seen from the data side) between levels; one `ClassCondDiagGaussian` prior per level. One train
step is the negative log-likelihood of a batch, its backward pass and an Adam update.

  python -m launch.benchmark_peer --image_shape 32,32,3 --num_classes 10
  python -m launch.benchmark_peer --image_shape 48,48,1 --num_classes 7

prints one JSON object with the step times and images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Dict, Sequence

import normflows as nf
import torch

from launch.arguments import int_tuple, positive_int


def _cpu_name() -> str:
  """The CPU model from /proc/cpuinfo where there is one (Linux), else what platform knows."""
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def build_glow(levels: int, steps: int, width: int, image_shape: Sequence[int],
               num_classes: int) -> nf.MultiscaleFlow:
  """normflows' class-conditional multiscale Glow for ``image_shape`` = (H, W, C)."""
  height, width_px, channels = image_shape
  scale = 2 ** levels
  if height % scale or width_px % scale:
    raise ValueError(f"image_shape {tuple(image_shape)} must have H and W divisible by "
                     f"2**levels = {scale}")
  priors, flows, merges = [], [], []
  # normflows lists levels from the top (coarsest) one down; level i sees C * 2**(levels+1-i)
  # channels, i.e. the squeezed input after the splits below it.
  for level in range(levels):
    blocks = [nf.flows.GlowBlock(channels * 2 ** (levels + 1 - level), width,
                                 split_mode="channel", scale=True) for _ in range(steps)]
    flows.append(blocks + [nf.flows.Squeeze()])
    if level == 0:
      latent_shape = (channels * 2 ** (levels + 1), height // scale, width_px // scale)
    else:
      merges.append(nf.flows.Merge())
      factor = 2 ** (levels - level)
      latent_shape = (channels * factor, height // factor, width_px // factor)
    priors.append(nf.distributions.ClassCondDiagGaussian(latent_shape, num_classes))
  return nf.MultiscaleFlow(priors, flows, merges, class_cond=True)


def benchmark_peer(levels: int = 3, steps: int = 8, width: int = 128,
                   image_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
                   batch_size: int = 32, warmup_steps: int = 3, timed_steps: int = 10,
                   threads: int | None = None, seed: int = 0) -> Dict[str, Any]:
  """Times normflows' Glow train step (forward, backward, Adam) on one fixed batch.

  Args:
    levels, steps, width: Glow's L, K and the coupling networks' hidden channels.
    image_shape: (H, W, C) of the images.
    num_classes: classes of the class-conditional priors.
    batch_size: images per step.
    warmup_steps: untimed steps first (the first one also initialises ActNorm from the data).
    timed_steps: steps timed one by one; the median is reported.
    threads: torch intra-op threads; the number of CPU cores when None.
    seed: seeds the model initialisation and the batch.

  Returns:
    A dict with the configuration, ``step_seconds`` (each timed step), ``median_step_seconds``
    and ``images_per_second`` (batch_size over the median step).
  """
  if warmup_steps < 1 or timed_steps < 1:
    raise ValueError(f"warmup_steps and timed_steps must be >= 1, got {warmup_steps} and "
                     f"{timed_steps}")
  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = build_glow(levels, steps, width, image_shape, num_classes)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  height, width_px, channels = image_shape
  # Dequantised pixels in [0, 1), NCHW as torch convolutions expect.
  images = torch.rand(batch_size, channels, height, width_px)
  labels = torch.randint(num_classes, (batch_size,))

  def train_step() -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = model.forward_kld(images, labels)
    loss.backward()
    optimizer.step()
    return loss.item()

  for _ in range(warmup_steps):
    train_step()
  step_seconds = []
  for _ in range(timed_steps):
    start = time.perf_counter()
    train_step()
    step_seconds.append(time.perf_counter() - start)
  median = statistics.median(step_seconds)
  return {
      "framework": f"torch {torch.__version__} + normflows {nf.__version__}",
      "levels": levels, "steps": steps, "width": width, "image_shape": list(image_shape),
      "num_classes": num_classes, "batch_size": batch_size, "threads": threads,
      "cpu": _cpu_name(),
      "parameters": sum(p.numel() for p in model.parameters()),
      "step_seconds": step_seconds, "median_step_seconds": median,
      # Other processes on the same cores slow torch's OpenMP threads a lot: judge noise by it.
      "load_average_1min": os.getloadavg()[0],
      "images_per_second": batch_size / median,
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--levels", type=positive_int, default=3)
  parser.add_argument("--steps", type=positive_int, default=8)
  parser.add_argument("--width", type=positive_int, default=128)
  parser.add_argument("--image_shape", type=int_tuple, default=(32, 32, 3), help="H,W,C")
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--batch_size", type=positive_int, default=32)
  parser.add_argument("--warmup_steps", type=positive_int, default=3)
  parser.add_argument("--timed_steps", type=positive_int, default=10)
  parser.add_argument("--threads", type=positive_int, default=None)
  args = parser.parse_args(argv)
  if len(args.image_shape) != 3:
    parser.error(f"--image_shape needs H,W,C, got {args.image_shape}")
  print(json.dumps(benchmark_peer(**vars(args))))


if __name__ == "__main__":
  main()

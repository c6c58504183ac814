"""Train-step throughput of the PyTorch peers, and torch.nn's time for single convolutions.

Two peers: a class-conditional Glow built from `normflows`, and a class-conditional BPLF written
directly in torch.nn (what a user would write instead of flaxflow's). The Glow follows normflows'
own multiscale Glow recipe: per level K `GlowBlock`s (ActNorm,
LU-parametrised invertible 1x1 convolution, affine coupling with a conv3x3 -> conv1x1 -> conv3x3
network of the given hidden width and a sigmoid scale) and a `Squeeze`; a `Merge` (the split,
seen from the data side) between levels; one `ClassCondDiagGaussian` prior per level. One train
step is the negative log-likelihood of a batch, its backward pass and an Adam update.

The BPLF is flaxflow's layer for layer (`flaxflow.models.BPLF` with its defaults): per step an
LU-parametrised invertible 1x1 convolution and the bi-parallel linear transformation of both
channel halves, y_k = s_k * x_k + mu_k with (s_k, mu_k) = g_k(x_{k-1}, y) and x_0 a learned
vector, each g_k conv3x3 -> ReLU -> conv3x3 (or conv1x1) -> ReLU -> zero conv3x3 on the input and
a projected one-hot label, log s bounded by 2 tanh(. / 2); learned split and top priors with
a per-class offset of every position and channel; the same parameter count. Its loss is
flaxflow's: bits/dim of log p(x | y).

  python -m launch.benchmark_peer --image_shape 32,32,3 --num_classes 10
  python -m launch.benchmark_peer --model bplf --image_shape 48,48,1 --num_classes 7
  python -m launch.benchmark_peer --conv_layers layers.json   # forward+backward of each layer

prints one JSON object with the step times and images per second (a list for --conv_layers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from typing import Any, Dict, Sequence

import math

import normflows as nf
import torch
import torch.nn.functional as F
from torch import nn

from flaxflow.launch.arguments import int_tuple, positive_int
from flaxflow.launch.timing import wall_times


class _InvertibleConv1x1(nn.Module):
  """W = P L (U + diag(sign * exp(log_abs_s))), from the LU factors of a random orthogonal W."""

  def __init__(self, channels: int):
    super().__init__()
    weight = torch.linalg.qr(torch.randn(channels, channels))[0]
    permutation, lower, upper = torch.linalg.lu(weight)
    diagonal = torch.diagonal(upper)
    self.register_buffer("permutation", permutation)
    self.register_buffer("sign_s", torch.sign(diagonal))
    self.lower = nn.Parameter(lower)
    self.upper = nn.Parameter(torch.triu(upper, 1))
    self.log_abs_s = nn.Parameter(torch.log(torch.abs(diagonal)))

  def forward(self, x):
    eye = torch.eye(x.shape[1], device=x.device)
    lower = torch.tril(self.lower, -1) + eye
    upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_abs_s))
    weight = self.permutation @ lower @ upper
    return F.conv2d(x, weight[:, :, None, None]), x.shape[2] * x.shape[3] * self.log_abs_s.sum()


class _CouplingNet(nn.Module):
  """g: conv -> ReLU -> conv -> ReLU -> zero conv, on the input and a projected one-hot label."""

  def __init__(self, in_channels: int, out_channels: int, width: int, middle_kernel: int,
               num_classes: int, cond_features: int = 8):
    super().__init__()
    self.cond_projection = nn.Linear(num_classes, cond_features)
    self.first = nn.Conv2d(in_channels + cond_features, width, 3, padding=1)
    self.middle = nn.Conv2d(width, width, middle_kernel, padding=middle_kernel // 2)
    self.last = nn.Conv2d(width, out_channels, 3, padding=1)
    nn.init.zeros_(self.last.weight)
    nn.init.zeros_(self.last.bias)
    self.logs = nn.Parameter(torch.zeros(out_channels))

  def forward(self, x, one_hot):
    cond = self.cond_projection(one_hot)[:, :, None, None].expand(-1, -1, *x.shape[2:])
    h = F.relu(self.first(torch.cat([x, cond], dim=1)))
    h = F.relu(self.middle(h))
    return self.last(h) * torch.exp(3.0 * self.logs)[None, :, None, None]


class _BiParallelLinear(nn.Module):
  """y_k = s_k * x_k + mu_k for the two channel halves, (mu_k, log s_k) = g_k(x_{k-1}, y)."""

  def __init__(self, channels: int, width: int, middle_kernel: int, num_classes: int,
               log_scale_bound: float = 2.0):
    super().__init__()
    half = channels // 2
    self.x0 = nn.Parameter(torch.randn(half))
    self.nets = nn.ModuleList([
        _CouplingNet(half, 2 * half, width, middle_kernel, num_classes) for _ in range(2)])
    self.bound = log_scale_bound

  def forward(self, x, one_hot):
    parts = torch.chunk(x, 2, dim=1)
    previous = [self.x0[None, :, None, None].expand_as(parts[0]), parts[0]]
    outputs, log_det = [], 0.0
    for part, before, net in zip(parts, previous, self.nets):
      shift, raw = torch.chunk(net(before, one_hot), 2, dim=1)
      log_scale = self.bound * torch.tanh(raw / self.bound)
      outputs.append(torch.exp(log_scale) * part + shift)
      log_det = log_det + log_scale.flatten(1).sum(1)
    return torch.cat(outputs, dim=1), log_det


def _gaussian_log_prob(z, mean, log_scale):
  return (-0.5 * (math.log(2 * math.pi) + 2 * log_scale
                  + ((z - mean) * torch.exp(-log_scale)) ** 2)).flatten(1).sum(1)


class TorchBPLF(nn.Module):
  """Class-conditional multi-scale BPLF; `log_prob(x, labels)` of NCHW x in [-0.5, 0.5)."""

  def __init__(self, levels: int, steps: int, width: int, image_shape: Sequence[int],
               num_classes: int, g_variant: str = "3x3"):
    super().__init__()
    height, width_px, channels = image_shape
    middle_kernel = {"3x3": 3, "3x3-1x1": 1}[g_variant]
    self.num_classes = num_classes
    self.levels = nn.ModuleList()
    self.split_convs, self.split_offsets = nn.ModuleList(), nn.ModuleList()
    for level in range(levels):
      channels *= 4
      side_h, side_w = height >> (level + 1), width_px >> (level + 1)
      self.levels.append(nn.ModuleList([
          nn.ModuleList([_InvertibleConv1x1(channels),
                         _BiParallelLinear(channels, width, middle_kernel, num_classes)])
          for _ in range(steps)]))
      if level < levels - 1:
        channels //= 2
        self.split_convs.append(nn.Conv2d(channels, 2 * channels, 3, padding=1))
        self.split_offsets.append(nn.Linear(num_classes, 2 * channels * side_h * side_w))
    for layer in [*self.split_convs, *self.split_offsets]:
      nn.init.zeros_(layer.weight)
      nn.init.zeros_(layer.bias)
    scale = 2 ** levels
    self.top = nn.Parameter(torch.zeros(2 * channels, height // scale, width_px // scale))
    self.top_offset = nn.Linear(num_classes, self.top.numel())
    nn.init.zeros_(self.top_offset.weight)
    nn.init.zeros_(self.top_offset.bias)

  def log_prob(self, x, labels):
    one_hot = F.one_hot(labels, self.num_classes).float()
    log_prob = torch.zeros(x.shape[0])
    h = x
    for level, steps in enumerate(self.levels):
      h = F.pixel_unshuffle(h, 2)
      for invertible_conv, coupling in steps:
        h, log_det = invertible_conv(h)
        h, coupling_log_det = coupling(h, one_hot)
        log_prob = log_prob + log_det + coupling_log_det
      if level < len(self.levels) - 1:
        h, z = torch.chunk(h, 2, dim=1)
        offset = self.split_offsets[level](one_hot).view(h.shape[0], -1, *h.shape[2:])
        stats = self.split_convs[level](h) + offset
        log_prob = log_prob + _gaussian_log_prob(z, *torch.chunk(stats, 2, dim=1))
    stats = self.top[None] + self.top_offset(one_hot).view(-1, *self.top.shape)
    return log_prob + _gaussian_log_prob(h, *torch.chunk(stats, 2, dim=1))


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


def benchmark_peer(model: str = "glow", levels: int = 3, steps: int = 8, width: int = 128,
                   image_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
                   g_variant: str = "3x3", batch_size: int = 32, warmup_steps: int = 3,
                   timed_steps: int = 10, threads: int | None = None,
                   seed: int = 0) -> Dict[str, Any]:
  """Times a peer's train step (forward, backward, Adam) on one fixed batch.

  Args:
    model: "glow" (normflows) or "bplf" (`TorchBPLF`).
    levels, steps, width: the flow's L, K and the coupling networks' hidden channels.
    image_shape: (H, W, C) of the images.
    num_classes: classes of the class-conditional priors.
    g_variant: BPLF's g, "3x3" or "3x3-1x1".
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
  threads = _set_threads(threads)
  torch.manual_seed(seed)
  height, width_px, channels = image_shape
  labels = torch.randint(num_classes, (batch_size,))
  if model == "glow":
    flow = build_glow(levels, steps, width, image_shape, num_classes)
    # Dequantised pixels in [0, 1), NCHW as torch convolutions expect.
    images = torch.rand(batch_size, channels, height, width_px)
    loss_fn = lambda: flow.forward_kld(images, labels)
    framework = f"torch {torch.__version__} + normflows {nf.__version__}"
  elif model == "bplf":
    flow = TorchBPLF(levels, steps, width, image_shape, num_classes, g_variant)
    images = torch.rand(batch_size, channels, height, width_px) - 0.5
    num_dims = height * width_px * channels
    loss_fn = lambda: torch.mean(math.log(256) * num_dims - flow.log_prob(images, labels)) / (
        num_dims * math.log(2))
    framework = f"torch {torch.__version__} (torch.nn BPLF)"
  else:
    raise ValueError(f"model must be 'glow' or 'bplf', got {model!r}")
  optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)

  def train_step() -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    optimizer.step()
    return loss.item()

  for _ in range(warmup_steps):
    train_step()
  step_seconds = wall_times(train_step, timed_steps)
  median = statistics.median(step_seconds)
  return {
      "framework": framework, "model": model, "g_variant": g_variant if model == "bplf" else None,
      "levels": levels, "steps": steps, "width": width, "image_shape": list(image_shape),
      "num_classes": num_classes, "batch_size": batch_size, "threads": threads,
      "cpu": _cpu_name(),
      "parameters": sum(p.numel() for p in flow.parameters()),
      "step_seconds": step_seconds, "median_step_seconds": median,
      # Other processes on the same cores slow torch's OpenMP threads a lot: judge noise by it.
      "load_average_1min": os.getloadavg()[0],
      "images_per_second": batch_size / median,
  }


def _set_threads(threads: int | None) -> int:
  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  return threads


def torch_convolution(layer: Dict[str, Any], x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
  """torch.nn's convolution of NCHW ``x`` as lax computes ``layer`` with an HWIO ``kernel``.

  ``layer`` is a convolution in lax's terms (``strides``, ``padding`` (low, high) pairs,
  ``input_dilation``); a dilated input is a transposed convolution, run as `conv_transpose2d`
  with the padding that gives lax's output. Padding must be symmetric except for a transposed
  convolution's extra high side.
  """
  kernel_h, kernel_w = kernel.shape[:2]
  (low_h, high_h), (low_w, high_w) = layer["padding"]
  dilation = tuple(layer.get("input_dilation", (1, 1)))
  if dilation == (1, 1):
    if (low_h, low_w) != (high_h, high_w):
      raise ValueError(f"torch's conv2d pads symmetrically, got padding {layer['padding']}")
    return F.conv2d(x, kernel.permute(3, 2, 0, 1), stride=tuple(layer["strides"]),
                    padding=(low_h, low_w))
  # lax correlates the dilated input with the kernel; conv_transpose2d uses it flipped.
  return F.conv_transpose2d(x, kernel.flip(0, 1).permute(2, 3, 0, 1), stride=dilation,
                            padding=(kernel_h - 1 - low_h, kernel_w - 1 - low_w),
                            output_padding=(high_h - low_h, high_w - low_w))


def time_convolution(layer: Dict[str, Any], repeats: int = 10, seed: int = 0) -> float:
  """Median seconds of torch.nn's forward and backward pass of `torch_convolution(layer)`.

  ``layer`` also gives ``input_shape`` (NHWC) and ``kernel_shape`` (HWIO).
  """
  torch.manual_seed(seed)
  batch, height, width, in_channels = layer["input_shape"]
  x = torch.randn(batch, in_channels, height, width, requires_grad=True)
  kernel = torch.randn(*layer["kernel_shape"], requires_grad=True)
  upstream = torch.randn_like(torch_convolution(layer, x, kernel))

  def forward_and_backward():
    x.grad = kernel.grad = None
    (torch_convolution(layer, x, kernel) * upstream).sum().backward()

  forward_and_backward()
  return statistics.median(wall_times(forward_and_backward, repeats))


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=("glow", "bplf"), default="glow")
  parser.add_argument("--g_variant", choices=("3x3", "3x3-1x1"), default="3x3", help="BPLF's g")
  parser.add_argument("--levels", type=positive_int, default=3)
  parser.add_argument("--steps", type=positive_int, default=8)
  parser.add_argument("--width", type=positive_int, default=128)
  parser.add_argument("--image_shape", type=int_tuple, default=(32, 32, 3), help="H,W,C")
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--batch_size", type=positive_int, default=32)
  parser.add_argument("--warmup_steps", type=positive_int, default=3)
  parser.add_argument("--timed_steps", type=positive_int, default=10)
  parser.add_argument("--threads", type=positive_int, default=None)
  parser.add_argument("--conv_layers", default=None,
                      help="a JSON file of convolution layers (see time_convolution) to time "
                           "instead of a train step")
  args = parser.parse_args(argv)
  if args.conv_layers:
    _set_threads(args.threads)
    with open(args.conv_layers) as file:
      layers = json.load(file)
    print(json.dumps([time_convolution(layer, args.timed_steps) for layer in layers]))
    return
  del args.conv_layers
  if len(args.image_shape) != 3:
    parser.error(f"--image_shape needs H,W,C, got {args.image_shape}")
  print(json.dumps(benchmark_peer(**vars(args))))


if __name__ == "__main__":
  main()

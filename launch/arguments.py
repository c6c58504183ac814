"""argparse types shared by the benchmark entry points (kept free of JAX and torch imports, so
that the PyTorch peer's process loads neither framework it does not time)."""

import argparse


def int_tuple(text: str) -> tuple:
  """'32,32,3' -> (32, 32, 3)."""
  try:
    return tuple(int(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated integers like 32,32,3, got {text!r}") from None


def positive_int(text: str) -> int:
  """An integer of at least 1."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
  return value

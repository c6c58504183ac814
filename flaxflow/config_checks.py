"""Up-front checks of a training config's numbers, so that a bad value fails before any work with
the field's name (`--config.<field>=<value>: expected ...`), not deep inside a run."""

import math
from typing import Any, Optional

import ml_collections


def field_value(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of the dotted `field` (e.g. "optimizer.learning_rate")."""
  value = config
  for name in field.split("."):
    value = value[name]
  return value


def _require(config: ml_collections.ConfigDict, field: str, holds: bool, expected: str) -> None:
  if not holds:
    raise ValueError(f"--config.{field}={field_value(config, field)!r}: expected {expected}")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def positive_int(config: ml_collections.ConfigDict, *fields: str) -> None:
  for field in fields:
    value = field_value(config, field)
    _require(config, field, _is_int(value) and value > 0, "a positive integer")


def non_negative_int(config: ml_collections.ConfigDict, *fields: str,
                     meaning_of_zero: Optional[str] = None) -> None:
  expected = "an integer >= 0" + (f" (0: {meaning_of_zero})" if meaning_of_zero else "")
  for field in fields:
    value = field_value(config, field)
    _require(config, field, _is_int(value) and value >= 0, expected)


def positive_finite(config: ml_collections.ConfigDict, *fields: str) -> None:
  for field in fields:
    value = field_value(config, field)
    _require(config, field, isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
             "a finite number > 0")


def in_interval(config: ml_collections.ConfigDict, field: str, low: float, high: float) -> None:
  """`low <= value < high`."""
  value = field_value(config, field)
  _require(config, field, isinstance(value, (int, float)) and low <= value < high,
           f"a number in [{low}, {high})")


def multiple_of(config: ml_collections.ConfigDict, field: str, divisor: int, what: str) -> None:
  """The integer `field` is a multiple of `divisor`, which is `what` (e.g. "the 8 devices")."""
  value = field_value(config, field)
  _require(config, field, _is_int(value) and value % divisor == 0, f"a multiple of {what}")

"""Orbax checkpoints of the train state together with the data iterator's state, and SIGTERM.

Each checkpoint step holds two items: "state" (the train state's arrays) and "data" (the JSON state
of the training data iterator), so a resumed run continues the same data order. Orbax writes a step
into a temporary directory and renames it only once complete, so an interrupted save is never
listed.
"""

import contextlib
import logging as python_logging
import os
import signal
import sys
import threading
import types
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

STATE_ITEM = "state"
DATA_ITEM = "data"


class _QuietOrbaxInfo(python_logging.Filter):
  """Drops Orbax's INFO lines (several per checkpoint read or written); keeps its warnings."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_info_logs() -> None:
  """Keeps Orbax's per-save INFO lines out of absl's log, where they would bury progress lines,
  and its shutdown noise after a failed restore out of the end of the output."""
  logging.get_absl_handler().addFilter(_QuietOrbaxInfo())
  sys.unraisablehook = _drop_orbax_unraisable


def _raised_in_orbax(traceback: Optional[types.TracebackType]) -> bool:
  while traceback is not None:
    if "/orbax/" in traceback.tb_frame.f_code.co_filename:
      return True
    traceback = traceback.tb_next
  return False


def _drop_orbax_unraisable(unraisable: Any) -> None:
  """After a failed restore, Orbax's unfinished read coroutines raise again as the interpreter
  exits ("Exception ignored in: <coroutine ...>", the event loop closed): each an echo of the
  error already reported, printed after it. Those are logged at debug level; others as usual."""
  if _raised_in_orbax(unraisable.exc_traceback):
    logging.debug("after exit, Orbax: %s", unraisable.exc_value)
  else:
    sys.__unraisablehook__(unraisable)


def create_manager(directory: str, *, save_interval_steps: int,
                   max_to_keep: Optional[int] = 3) -> ocp.CheckpointManager:
  """A manager for `directory` that saves every `save_interval_steps` (and when forced)."""
  if save_interval_steps < 1:
    raise ValueError(f"save_interval_steps={save_interval_steps}: expected a positive integer")
  # Orbax would also save the very first step of a run; only the interval and preemption count here.
  policies = ocp.checkpoint_managers
  save_policy = policies.AnySavePolicy([policies.FixedIntervalPolicy(save_interval_steps),
                                        policies.PreemptionCheckpointingPolicy()])
  options = ocp.CheckpointManagerOptions(save_decision_policy=save_policy, max_to_keep=max_to_keep,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=(STATE_ITEM, DATA_ITEM))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: Dict[str, Any], *,
         force: bool = False) -> bool:
  """Saves (asynchronously) when the interval says so or `force`; returns whether it saved."""
  args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                               DATA_ITEM: ocp.args.JsonSave(data_state)})
  return manager.save(step, args=args, force=force)


def abstract_state(init: Callable[..., Any], sharding: jax.sharding.Sharding,
                   *args: Any) -> Any:
  """The structure of `init(*args)` with `jax.ShapeDtypeStruct` leaves on `sharding`, computed
  without running `init`: what `restore` needs to know what to read and where to put it."""
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                      jax.eval_shape(init, *args))


def restore_task_state(init_state: Callable[..., Any], checkpoint_dir: str,
                       image_shape: Tuple[int, ...], mesh: jax.sharding.Mesh,
                       step: Optional[int] = None) -> Any:
  """The state of checkpoint `step` (default: the latest) of a task whose
  `init_state(batch, rng)` makes it from {"image", "label"} batches of `image_shape`, replicated
  on `mesh`; a zero batch of one image per device only gives the state its structure."""
  batch = {"image": jax.numpy.zeros((mesh.size, *image_shape), jax.numpy.uint8),
           "label": jax.numpy.zeros((mesh.size,), jax.numpy.int32)}
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = abstract_state(init_state, replicated, batch, jax.random.PRNGKey(0))
  return restore_for_reading(checkpoint_dir, state, step)


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
  """(state, data_state) of `step` (default: the latest complete one).

  `abstract_state` is the state's structure with `jax.ShapeDtypeStruct` leaves carrying the
  shardings to restore onto.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no complete checkpoint in {manager.directory}")
  args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state),
                               DATA_ITEM: ocp.args.JsonRestore()})
  restored = manager.restore(step, args=args)
  return restored[STATE_ITEM], restored[DATA_ITEM]


UNREADABLE_PREFIX = "unreadable_"


def _first_line(error: BaseException) -> str:
  """The first line of the innermost cause of `error`: Orbax wraps the file's own error."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0] if lines else ''}"


class UnreadableCheckpointError(ValueError):
  """A checkpoint could not be read; the message ends with the first line of the innermost
  cause."""


def _restore_or_explain(manager: ocp.CheckpointManager, abstract_state: Any,
                        step: int) -> Tuple[Any, Dict[str, Any]]:
  try:
    return restore(manager, abstract_state, step)
  # Orbax and TensorStore report a damaged file with many exception types.
  except Exception as error:  # pylint: disable=broad-except
    raise UnreadableCheckpointError(f"the checkpoint of step {step} in {manager.directory} is "
                                    f"unreadable ({_first_line(error)})") from error


def _unused_path(path: str) -> str:
  """`path`, or `path.<n>` with the first n >= 1 that does not exist yet."""
  candidate, number = path, 0
  while os.path.exists(candidate):
    number += 1
    candidate = f"{path}.{number}"
  return candidate


def restore_latest_readable(manager: ocp.CheckpointManager, abstract_state: Any, *,
                            move_aside: bool = True) -> Tuple[Any, Dict[str, Any]]:
  """(state, data_state) of the latest checkpoint that can be read, falling back step by step.

  Each unreadable checkpoint (a truncated or deleted file) is logged in one line with its cause;
  once an earlier one has been read, the unreadable later ones are moved aside to
  `unreadable_<step>` (kept for inspection; unless not `move_aside`, for tools that only read) so
  that the resumed run can save those steps again. When none can be read, the error names each
  step's cause and nothing is moved.
  """
  failures = {}
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = _restore_or_explain(manager, abstract_state, step)
    except UnreadableCheckpointError as error:
      failures[step] = str(error)
      logging.warning("%s; trying the previous one", error)
      continue
    if failures and move_aside and jax.process_index() == 0:
      for failed in failures:
        os.rename(os.path.join(manager.directory, str(failed)),
                  _unused_path(os.path.join(manager.directory, f"{UNREADABLE_PREFIX}{failed}")))
    manager.reload()
    return restored
  if not failures:
    raise FileNotFoundError(f"no complete checkpoint in {manager.directory}")
  raise ValueError(f"no readable checkpoint in {manager.directory}: "
                   + "; ".join(failures.values()))


def restore_for_reading(directory: str, abstract_state: Any, step: Optional[int] = None) -> Any:
  """The state of `step` (default: the latest) in a run's checkpoint `directory`, for tools that
  only read it: nothing is created or cleaned up there (a temporary folder may be a save still
  under way)."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint folder {directory}")
  options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False)
  manager = ocp.CheckpointManager(directory, options=options, item_names=(STATE_ITEM, DATA_ITEM))
  try:
    available = manager.all_steps()
    if step is None:
      state, _ = restore_latest_readable(manager, abstract_state, move_aside=False)
    elif step not in available:
      raise ValueError(f"step={step}: {directory} has the steps {sorted(available)}")
    else:
      state, _ = _restore_or_explain(manager, abstract_state, step)
  finally:
    manager.close()
  return state


class Preempted(BaseException):
  """SIGTERM stopped a program where it had no step to stop at (its start-up, a final
  evaluation), or a run stopped early for it; rerunning the same command resumes. A
  BaseException, as KeyboardInterrupt is, so that no `except Exception` it passes through (e.g.
  a checkpoint read's fallback to an earlier checkpoint) takes it for a failure of its work."""


def _raise_preempted(signum, frame) -> None:
  del signum, frame
  raise Preempted("SIGTERM")


@contextlib.contextmanager
def preempt_on_sigterm() -> Iterator[None]:
  """While the block runs in the main thread, SIGTERM raises `Preempted` there, at its next
  Python instruction (a compilation or device computation under way finishes first), instead of
  killing the process. A `StopRequest` inside the block takes SIGTERM over while it is active."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGTERM, _raise_preempted)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


class StopRequest:
  """Notices a request to stop (SIGTERM) so that the loop can save a checkpoint and return.

  With one process a SIGTERM handler sets a flag. With several, JAX's preemption service already
  watches SIGTERM and agrees on a step at which every process stops (`manager.reached_preemption`),
  so that all of them take part in the final save.
  """

  def __init__(self):
    self._received = threading.Event()
    self._previous_handler = None

  def __enter__(self) -> "StopRequest":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._received.set()

  def should_stop(self, manager: ocp.CheckpointManager, step: int) -> bool:
    return self._received.is_set() or manager.reached_preemption(step)

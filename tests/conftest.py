"""Test-session settings: one persistent XLA compilation cache for every test and subprocess.

Many tests compile the same programs: a training run and the same run resumed, the folds of a
cross-validation, the rows of the ablation, xdist's workers. JAX's persistent cache serves a
program compiled once to every later process, which changes no result (the cache is keyed by the
program and the compiler's settings) and saves most of the suite's compile time. The environment
variable reaches the subprocesses that tests start; the config update reaches this process even
if JAX was imported first.

The tests run on the CPU: JAX_PLATFORMS keeps this process and its subprocesses from probing for
the TPU and GPU whose compilers the test extra installs (`flaxflow.aot` compiles for them without
devices).
"""

import os
import tempfile

import jax

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])

CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"flaxflow-tests-xla-cache-{os.getuid()}"))
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)

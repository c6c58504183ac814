import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow.bijectors import G_KERNEL_SIZES, BiParallelLinear

from .checker import check_bijector, init_perturbed, one_hot_cond, spatial_cond, unit_inputs

CONDS = {"none": None, "one_hot": one_hot_cond(), "spatial": spatial_cond()}


@pytest.mark.parametrize("cond_kind", sorted(CONDS))
@pytest.mark.parametrize("g_variant", sorted(G_KERNEL_SIZES))
def test_bi_parallel_linear_is_a_bijector(cond_kind, g_variant):
  cond = CONDS[cond_kind]
  check_bijector(BiParallelLinear(width=16, g_variant=g_variant), unit_inputs(), cond,
                 cond_matters=None if cond is None else True)


@pytest.mark.parametrize("num_parts, channels", [(3, 8), (4, 8), (3, 5), (2, 7)])
def test_any_part_count_and_uneven_channels(num_parts, channels):
  check_bijector(BiParallelLinear(num_parts=num_parts, width=8), unit_inputs((2, 4, 4, channels)),
                 one_hot_cond(), cond_matters=True)


def test_g_variants_have_the_ablation_kernels():
  for g_variant, kernels in (("3x3", (3, 3, 3)), ("3x3-1x1", (3, 1, 3))):
    variables = jax.eval_shape(BiParallelLinear(width=4, g_variant=g_variant).init,
                               jax.random.key(0), unit_inputs())
    g_1 = variables["params"]["g_1"]
    found = (g_1["Conv_0"]["kernel"].shape[0], g_1["Conv_1"]["kernel"].shape[0],
             g_1["ZeroConv_0"]["Conv_0"]["kernel"].shape[0])
    assert found == kernels


def test_part_k_depends_only_on_part_k_minus_1():
  x = unit_inputs((2, 4, 4, 9))
  bijector = BiParallelLinear(num_parts=3, width=8)
  variables = init_perturbed(bijector, x)
  forward = jax.jit(bijector.apply)
  y, _ = forward(variables, x)
  # Changing part 2 (channels 3..5) leaves part 1 alone and changes parts 2 and 3.
  y_changed, _ = forward(variables, x.at[..., 3:6].add(1.0))
  np.testing.assert_array_equal(y_changed[..., :3], y[..., :3])
  assert not np.allclose(y_changed[..., 3:6], y[..., 3:6])
  assert not np.allclose(y_changed[..., 6:], y[..., 6:])
  # Changing part 3 changes only part 3: nothing reads the last part.
  y_changed, _ = forward(variables, x.at[..., 6:].add(1.0))
  np.testing.assert_array_equal(y_changed[..., :6], y[..., :6])


def test_log_scale_is_bounded():
  x = unit_inputs()
  bijector = BiParallelLinear(width=8, log_scale_bound=0.5)
  variables = jax.jit(bijector.init)(jax.random.key(0), x)
  huge = jax.tree.map(lambda p: p + 50.0, variables)
  _, log_det = jax.jit(bijector.apply)(huge, x)
  assert np.all(np.abs(log_det) <= 0.5 * x[0].size + 1e-3)


def test_identity_at_init():
  x = unit_inputs()
  bijector = BiParallelLinear(width=8)
  y, log_det = jax.jit(bijector.apply)(jax.jit(bijector.init)(jax.random.key(0), x), x)
  np.testing.assert_array_equal(y, x)
  np.testing.assert_array_equal(log_det, 0.0)


@pytest.mark.parametrize("kwargs, channels, message", [
    ({"num_parts": 1}, 8, "num_parts >= 2"),
    ({"num_parts": 4}, 3, "at least 4 channels"),
    ({"g_variant": "1x1"}, 8, "g_variant"),
])
def test_bad_configuration_is_a_clear_error(kwargs, channels, message):
  with pytest.raises(ValueError, match=message):
    BiParallelLinear(width=4, **kwargs).init(jax.random.key(0), unit_inputs((1, 4, 4, channels)))


def test_bfloat16_compute_keeps_float32_log_det():
  check_bijector(BiParallelLinear(width=16, dtype=jnp.bfloat16), unit_inputs(), one_hot_cond(),
                 cond_matters=True, round_trip_atol=1e-2)


@pytest.mark.parametrize("cond_kind", sorted(CONDS))
def test_one_hot_cond_is_a_bijector(cond_kind):
  cond = CONDS[cond_kind]
  check_bijector(BiParallelLinear(width=16, one_hot_cond=True), unit_inputs(), cond,
                 cond_matters=None if cond is None else True)


def test_first_g_runs_once_per_class_and_matches_running_per_example():
  batch = 7
  x, cond = unit_inputs((batch, 4, 4, 8)), one_hot_cond(batch)
  per_example, per_class = BiParallelLinear(width=8), BiParallelLinear(width=8, one_hot_cond=True)
  variables = init_perturbed(per_example, x, cond)
  for method in ("forward_and_log_det", "inverse_and_log_det"):
    expected = jax.jit(functools.partial(per_example.apply, method=method))(variables, x, cond)
    found = jax.jit(functools.partial(per_class.apply, method=method))(variables, x, cond)
    for a, b in zip(found, expected):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  _, state = per_class.apply(variables, x, cond, capture_intermediates=True, mutable=True)
  g_inputs = {name: out["__call__"][0].shape[0]
              for name, out in state["intermediates"].items() if name.startswith("g_")}
  # g_1 sees each of the N_CLASSES classes once; g_2 reads the data, one row per example.
  assert g_inputs == {"g_1": cond.shape[-1], "g_2": batch}


def test_without_cond_first_g_runs_once():
  x = unit_inputs((5, 4, 4, 8))
  bijector = BiParallelLinear(width=8)
  variables = init_perturbed(bijector, x)
  _, state = bijector.apply(variables, x, capture_intermediates=True, mutable=True)
  assert state["intermediates"]["g_1"]["__call__"][0].shape[0] == 1


def test_first_g_runs_per_example_when_the_batch_has_fewer_rows_than_classes():
  """Two examples, three classes: g_1 on the two examples' own labels is less work than on every
  class, and gives the same outputs."""
  x, cond = unit_inputs((2, 4, 4, 8)), one_hot_cond(2)
  bijector = BiParallelLinear(width=8, one_hot_cond=True)
  variables = init_perturbed(bijector, x, cond)
  found = jax.jit(bijector.apply)(variables, x, cond)
  expected = jax.jit(BiParallelLinear(width=8).apply)(variables, x, cond)
  for a, b in zip(found, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  _, state = bijector.apply(variables, x, cond, capture_intermediates=True, mutable=True)
  assert state["intermediates"]["g_1"]["__call__"][0].shape[0] == 2

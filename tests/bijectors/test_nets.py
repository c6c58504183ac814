import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxflow.bijectors import CouplingNet

from tiny_models import perturb_params

from .checker import one_hot_cond, spatial_cond, unit_inputs


def _init_and_apply(net, x, cond=None, perturbed=True):
  variables = jax.jit(net.init)(jax.random.key(0), x, cond)
  if perturbed:
    variables = perturb_params(variables, seed=0)
  return variables, jax.jit(net.apply)(variables, x, cond)


def test_output_is_zero_at_init():
  _, h = _init_and_apply(CouplingNet(6, width=8), unit_inputs(), one_hot_cond(), perturbed=False)
  assert h.shape == (2, 4, 4, 6)
  np.testing.assert_array_equal(h, 0.0)


def test_layers_follow_kernel_sizes():
  variables = jax.eval_shape(CouplingNet(6, width=8, kernel_sizes=(5, 1, 1, 3)).init,
                             jax.random.key(0), unit_inputs())
  params = variables["params"]
  kernels = [params[f"Conv_{i}"]["kernel"].shape for i in range(3)]
  assert kernels == [(5, 5, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8)]
  assert params["ZeroConv_0"]["Conv_0"]["kernel"].shape == (3, 3, 8, 6)


@pytest.mark.parametrize("cond", [one_hot_cond(), spatial_cond()], ids=["one_hot", "spatial"])
def test_cond_changes_the_output_per_example(cond):
  x = unit_inputs()
  net = CouplingNet(6, width=8)
  variables, h = _init_and_apply(net, x, cond)
  h_rolled = jax.jit(net.apply)(variables, x, np.roll(cond, 1, axis=0))
  assert not np.allclose(h, h_rolled)
  # Example 0 with example 0's cond gives the same output alone as in the batch.
  h_single = jax.jit(net.apply)(variables, x[:1], cond[:1])
  np.testing.assert_allclose(h_single, h[:1], atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_output():
  x = unit_inputs()
  variables, h = _init_and_apply(CouplingNet(6, width=8, dtype=jnp.bfloat16), x, one_hot_cond())
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {np.dtype("float32")}
  assert h.dtype == jnp.float32
  _, h_float32 = _init_and_apply(CouplingNet(6, width=8), x, one_hot_cond())
  np.testing.assert_allclose(h, h_float32, rtol=0.1, atol=0.1)
  assert not np.array_equal(h, h_float32)


@pytest.mark.parametrize("cond, message", [
    (jnp.zeros((2, 3, 1)), r"\(batch, n_classes\) or \(batch, H, W, c\)"),
    (jnp.zeros((3, 3)), "batch size"),
    (jnp.zeros((2, 2, 2, 1)), "spatial cond"),
])
def test_bad_cond_is_a_clear_error(cond, message):
  with pytest.raises(ValueError, match=message):
    CouplingNet(6, width=8).init(jax.random.key(0), unit_inputs(), cond)

"""flaxflow.conv.Conv against flax.linen.Conv: parameters, outputs, gradients, fallbacks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from flaxflow import conv as fconv

# (kernel_size, in_channels, features): a coupling net's narrow-input 3x3, its 1x1 both ways,
# its narrow-output 3x3, even and 5x5 kernels, and two cases left to lax (both sides wide).
SHAPES = [((3, 3), 6, 32), ((1, 1), 32, 32), ((1, 1), 32, 5), ((3, 3), 32, 4),
          ((2, 2), 3, 16), ((5, 5), 2, 64), ((3, 3), 8, 8), ((3, 3), 16, 12)]


def _inputs(in_channels, shape=(2, 6, 5), seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal(shape + (in_channels,)), jnp.float32)


def _random_params(module, x, seed=1):
  """nn.Conv-style params with a non-zero bias."""
  params = module.init(jax.random.key(seed), x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)


def _loss(module):
  # A fixed non-uniform weighting, so that every output pixel's gradient differs.
  def loss(params, x):
    y = module.apply(params, x)
    weights = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
    return jnp.sum(y.astype(jnp.float32) * weights)
  return loss


@pytest.mark.parametrize("kernel_size,in_channels,features", SHAPES)
def test_params_outputs_and_gradients_match_flax_conv(kernel_size, in_channels, features):
  x = _inputs(in_channels)
  ours = fconv.Conv(features, kernel_size, padding="SAME")
  reference = nn.Conv(features, kernel_size, padding="SAME")
  key = jax.random.key(3)
  ours_init, reference_init = ours.init(key, x), reference.init(key, x)
  assert jax.tree.structure(ours_init) == jax.tree.structure(reference_init)
  jax.tree.map(np.testing.assert_array_equal, ours_init, reference_init)

  params = _random_params(reference, x)
  np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x),
                             rtol=1e-5, atol=1e-4)
  ours_grads = jax.grad(_loss(ours), argnums=(0, 1))(params, x)
  reference_grads = jax.grad(_loss(reference), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3),
               ours_grads, reference_grads)


@pytest.mark.parametrize("kernel_size,in_channels,features",
                         [((3, 3), 3, 16), ((3, 3), 16, 3), ((1, 1), 4, 6), ((2, 2), 2, 9)])
def test_gradients_match_finite_differences(kernel_size, in_channels, features):
  with jax.enable_x64(True):
    x = _inputs(in_channels, shape=(2, 4, 3)).astype(jnp.float64)
    kernel = jnp.asarray(np.random.default_rng(5).standard_normal(
        kernel_size + (in_channels, features)), jnp.float64)
    assert fconv.shifts_pay_off(kernel.shape)
    check_grads(fconv.conv2d_same, (x, kernel), order=2, modes=("fwd", "rev"),
                atol=1e-6, rtol=1e-6)


def test_coupling_net_shapes_take_the_shifted_copies_path():
  # Glow's coupling net at 32x32x3 (levels of 6, 12, 24 input channels) and 48x48x1, width 128.
  for half in (2, 4, 6, 8, 12, 24):
    assert fconv.shifts_pay_off((3, 3, half, 128))
    assert fconv.shifts_pay_off((3, 3, 128, 2 * half))
  assert fconv.shifts_pay_off((1, 1, 128, 128))
  assert not fconv.shifts_pay_off((3, 3, 128, 128))


def test_fast_path_has_no_convolution_in_forward_or_backward():
  x = _inputs(6)
  kernel = jnp.ones((3, 3, 6, 64))
  loss = lambda k, x: jnp.sum(fconv.conv2d_same(x, k) ** 2)
  jaxpr = str(jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(kernel, x))
  assert "conv_general_dilated" not in jaxpr
  assert "dot_general" in jaxpr


def test_bfloat16_compute_with_float32_params():
  x = _inputs(6)
  ours = fconv.Conv(32, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.float32)
  reference = nn.Conv(32, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.float32)
  params = _random_params(reference, x)
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  y = ours.apply(params, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), reference.apply(params, x).astype(jnp.float32),
                             rtol=5e-2, atol=2e-1)
  grads = jax.grad(_loss(ours))(params, x)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("options", [dict(strides=(2, 2)), dict(padding="VALID"),
                                     dict(kernel_dilation=(2, 2)), dict(feature_group_count=2),
                                     dict(padding=((1, 1), (1, 1)))])
def test_other_options_match_flax_conv(options):
  x = _inputs(4, shape=(2, 8, 8))
  ours = fconv.Conv(6, (3, 3), **options)
  reference = nn.Conv(6, (3, 3), **options)
  params = _random_params(reference, x)
  np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x),
                             rtol=1e-5, atol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3),
               jax.grad(_loss(ours))(params, x), jax.grad(_loss(reference))(params, x))


def test_forward_mode_jacobian():
  x = _inputs(3, shape=(1, 3, 3))
  kernel = jnp.asarray(np.random.default_rng(2).standard_normal((3, 3, 3, 16)), jnp.float32)
  jacobian = jax.jacfwd(lambda x: fconv.conv2d_same(x, kernel))(x)
  reference = jax.jacrev(lambda x: fconv.conv2d_same(x, kernel))(x)
  np.testing.assert_allclose(jacobian, reference, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_rejected():
  with pytest.raises(ValueError, match="NHWC"):
    fconv.conv2d_same(jnp.ones((4, 4, 3)), jnp.ones((3, 3, 3, 8)))
  with pytest.raises(ValueError, match="channels"):
    fconv.conv2d_same(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 2, 8)))

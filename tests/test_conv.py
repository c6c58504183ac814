"""flaxflow.conv against flax.linen's Conv, ConvTranspose: parameters, outputs, gradients, paths."""

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from flaxflow import conv as fconv
from flaxflow.models.step_stack import StepStack
from flaxflow.bijectors.bi_parallel_linear import BiParallelLinear

# (kernel_size, in_channels, features, options): the coupling nets' narrow-input, square and
# narrow-output 3x3s and their 1x1s; even and 5x5 kernels; the GANs' strided 4x4 and 3x3, 7x7
# stems and strided 7x7; VALID and explicit, asymmetric paddings.
CONV_CASES = [
    ((3, 3), 6, 32, {}), ((3, 3), 16, 16, {}), ((3, 3), 32, 4, {}), ((1, 1), 32, 32, {}),
    ((1, 1), 32, 5, {}), ((2, 2), 3, 16, {}), ((5, 5), 2, 64, {}),
    ((4, 4), 4, 8, dict(strides=(2, 2), padding=((1, 1), (1, 1)))),
    ((4, 4), 8, 4, dict(strides=(2, 2), padding="SAME")),
    ((3, 3), 6, 10, dict(strides=(2, 2))), ((7, 7), 1, 16, {}),
    ((7, 7), 6, 12, dict(strides=(2, 2))), ((3, 3), 5, 7, dict(padding="VALID")),
    ((3, 2), 4, 6, dict(strides=(3, 1), padding=((2, 0), (0, 3)))),
]
# (kernel_size, in_channels, features, strides, padding) of transposed convolutions: the U-Net
# decoder's 4x4 stride 2 both ways, DECGAN's 3x3 stride 2, and odd cases.
TRANSPOSE_CASES = [((4, 4), 8, 4, (2, 2), "SAME"), ((4, 4), 4, 8, (2, 2), ((2, 2), (2, 2))),
                   ((3, 3), 6, 5, (2, 2), "SAME"), ((3, 3), 5, 6, (1, 1), "VALID"),
                   ((5, 2), 3, 4, (3, 2), "VALID")]


def _inputs(in_channels, shape=(2, 8, 7), seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal(shape + (in_channels,)), jnp.float32)


def _random_params(module, x, seed=1):
  """Parameters of `module` drawn at random, the bias non-zero."""
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


def _assert_same_layer(ours, reference, x):
  """Same parameter tree at init, same outputs and gradients for the same random parameters."""
  key = jax.random.key(3)
  ours_init, reference_init = ours.init(key, x), reference.init(key, x)
  assert jax.tree.structure(ours_init) == jax.tree.structure(reference_init)
  jax.tree.map(np.testing.assert_array_equal, ours_init, reference_init)
  params = _random_params(reference, x)
  np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x),
                             rtol=1e-5, atol=1e-4)
  ours_grads = jax.jit(jax.grad(_loss(ours), argnums=(0, 1)))(params, x)
  reference_grads = jax.grad(_loss(reference), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3),
               ours_grads, reference_grads)


def _jaxpr_of_gradient(function, *args) -> str:
  return str(jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(function(*a) ** 2),
                                     argnums=tuple(range(len(args)))))(*args))


@pytest.mark.parametrize("kernel_size,in_channels,features,options", CONV_CASES)
def test_conv_matches_flax_conv(kernel_size, in_channels, features, options):
  x = _inputs(in_channels)
  _assert_same_layer(fconv.Conv(features, kernel_size, **options),
                     nn.Conv(features, kernel_size, **options), x)


@pytest.mark.parametrize("kernel_size,in_channels,features,strides,padding", TRANSPOSE_CASES)
def test_conv_transpose_matches_flax_conv_transpose(kernel_size, in_channels, features,
                                                    strides, padding):
  x = _inputs(in_channels, shape=(2, 5, 6))
  _assert_same_layer(fconv.ConvTranspose(features, kernel_size, strides, padding),
                     nn.ConvTranspose(features, kernel_size, strides, padding), x)


@pytest.mark.parametrize("kernel_shape,options", [
    ((3, 3, 3, 16), dict(window_strides=(1, 1), padding="SAME")),
    ((3, 3, 16, 3), dict(window_strides=(2, 2), padding="SAME")),
    ((4, 4, 4, 3), dict(window_strides=(1, 1), padding=((2, 2), (1, 2)), lhs_dilation=(2, 2))),
])
def test_gradients_match_finite_differences(kernel_shape, options):
  with jax.enable_x64(True):
    x = _inputs(kernel_shape[2], shape=(2, 5, 4)).astype(jnp.float64)
    kernel = jnp.asarray(np.random.default_rng(5).standard_normal(kernel_shape), jnp.float64)
    convolve = lambda x, kernel: fconv.conv_general_dilated(
        x, kernel, dimension_numbers=("NHWC", "HWIO", "NHWC"), **options)
    check_grads(convolve, (x, kernel), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_every_model_layer_shape_is_written_as_products():
  # Flows' square, narrow and 1x1 kernels; the GANs' strided, 7x7 and transposed layers.
  stride_1 = dict(window_strides=(1, 1), padding="SAME")
  for lhs, rhs, options in [
      ((2, 14, 14, 2), (3, 3, 2, 64), stride_1), ((2, 14, 14, 64), (3, 3, 64, 64), stride_1),
      ((2, 7, 7, 512), (3, 3, 512, 512), stride_1), ((2, 14, 14, 64), (3, 3, 64, 4), stride_1),
      ((2, 8, 8, 64), (4, 4, 64, 128), dict(window_strides=(2, 2), padding=((1, 1), (1, 1)))),
      ((2, 16, 16, 64), (7, 7, 64, 128), dict(window_strides=(2, 2), padding="SAME")),
      ((2, 8, 8, 128), (4, 4, 128, 64),
       dict(window_strides=(1, 1), padding=((2, 2), (2, 2)), lhs_dilation=(2, 2)))]:
    assert fconv.products_plan(lhs, rhs, dimension_numbers=("NHWC", "HWIO", "NHWC"), **options)


def test_square_3x3_in_a_scanned_step_stack_trains_without_convolutions_on_cpu():
  """BPLF's g (square 3x3 hidden convolutions) inside `lax.scan`: no convolution op at all.

  XLA:CPU runs a convolution's gradient inside a loop tens of times slower than outside one;
  the products path is what keeps a scanned BPLF step fast there.
  """
  stack = StepStack(lambda: BiParallelLinear(width=16), num_steps=2)
  x = _inputs(4, shape=(2, 6, 6))
  variables = stack.init(jax.random.key(0), x, method="forward_and_log_det")
  loss = lambda v, x: jnp.sum(stack.apply(v, x, method="forward_and_log_det")[0])
  jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(variables, x))
  assert "scan" in jaxpr
  assert "conv_general_dilated" not in jaxpr
  assert "dot_general" in jaxpr
  with fconv.lax_convolutions():
    assert "conv_general_dilated" in str(jax.make_jaxpr(jax.grad(loss))(variables, x))


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_accelerators_keep_the_native_convolution(monkeypatch, backend):
  """cuDNN's and the TPU's convolutions have none of XLA:CPU's weaknesses: no products there."""
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  x = _inputs(4)
  for function in (
      lambda x, k: fconv.conv_general_dilated(x, k, (1, 1), "SAME",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")),
      lambda x, k: fconv.conv_general_dilated(x, k, (2, 2), "SAME",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")),
      lambda x, k: fconv.conv_transpose(x, k, (2, 2), "SAME")):
    jaxpr = _jaxpr_of_gradient(function, x, jnp.ones((3, 3, 4, 6)))
    assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr


def test_strided_and_transposed_layers_train_without_convolutions_on_cpu():
  x = _inputs(4)
  strided = lambda x, k: fconv.conv_general_dilated(x, k, (2, 2), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  transposed = lambda x, k: fconv.conv_transpose(x, k, (2, 2), "SAME")
  for function in (strided, transposed):
    jaxpr = _jaxpr_of_gradient(function, x, jnp.ones((4, 4, 4, 6)))
    assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


@pytest.mark.parametrize("options", [dict(kernel_dilation=(2, 2)), dict(feature_group_count=2)])
def test_uncovered_options_keep_lax_and_match_flax_conv(options):
  x = _inputs(4)
  ours = fconv.Conv(6, (3, 3), **options)
  params = _random_params(nn.Conv(6, (3, 3), **options), x)
  assert "conv_general_dilated" in str(jax.make_jaxpr(ours.apply)(params, x))
  _assert_same_layer(ours, nn.Conv(6, (3, 3), **options), x)


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


def test_forward_mode_jacobian():
  x = _inputs(3, shape=(1, 4, 4))
  kernel = jnp.asarray(np.random.default_rng(2).standard_normal((3, 3, 3, 5)), jnp.float32)
  for strides in ((1, 1), (2, 2)):
    convolve = functools.partial(fconv.conv_general_dilated, rhs=kernel, window_strides=strides,
                                 padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(jax.jacfwd(convolve)(x), jax.jacrev(convolve)(x),
                               rtol=1e-5, atol=1e-5)


def test_mismatched_channels_and_bad_padding_are_rejected():
  with pytest.raises(ValueError, match="channels"):
    fconv.conv_general_dilated(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 2, 8)), (1, 1), "SAME",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  with pytest.raises(ValueError, match="padding"):
    fconv.conv_transpose(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 8)), (2, 2), "FULL")
  with pytest.raises(ValueError, match="NHWC"):
    fconv.ConvTranspose(4, (3, 3)).init(jax.random.key(0), jnp.ones((4, 4, 3)))


def test_lax_reference_is_unchanged_by_the_switch():
  x, kernel = _inputs(3), jnp.ones((3, 3, 3, 4))
  convolve = lambda x: fconv.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  with fconv.lax_convolutions():
    native = convolve(x)
  np.testing.assert_allclose(convolve(x), native, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(native, lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")), rtol=1e-6)

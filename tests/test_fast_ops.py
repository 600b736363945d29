"""The CPU-fast convolution and max-pool equal XLA's own ops, in outputs and gradients, in every model."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_val import fast_ops, models
from cnn_val.configs import cifar10_resnet, default, fashion_mnist_bn, seed_ex1


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((3, 28, 28, 1), (3, 3), (1, 1), "VALID"),
    ((3, 13, 13, 32), (3, 3), (1, 1), "VALID"),
    ((2, 14, 14, 8), (3, 3), (1, 1), "SAME"),
    ((2, 15, 15, 4), (3, 3), (2, 2), "SAME"),
    ((2, 16, 16, 4), (1, 1), (2, 2), "SAME"),
    ((2, 9, 9, 3), (5, 5), (1, 1), ((1, 2), (2, 1))),
])
def test_conv_matmul_equals_xla_conv(shape, kernel, strides, padding):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel + (shape[-1], 6)) * 0.2
  dn = ("NHWC", "HWIO", "NHWC")

  def xla(x, w):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

  def ours(x, w):
    return fast_ops.conv_matmul(x, w, strides, padding, dimension_numbers=dn)

  # Compiled as a step compiles them (run op by op, each slice and pad would compile alone: seconds per test).
  np.testing.assert_allclose(jax.jit(ours)(x, w), jax.jit(xla)(x, w), rtol=1e-5, atol=1e-5)
  grads = lambda f: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), (0, 1)))(x, w)
  for got, want in zip(grads(ours), grads(xla)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cpu_auto_picks_matmul_only_for_small_im2col_buffers(monkeypatch):
  calls = []
  monkeypatch.setattr(fast_ops, "conv_matmul", lambda *a, **k: calls.append("matmul"))
  dn = ("NHWC", "HWIO", "NHWC")
  small = jnp.zeros((32, 13, 13, 32))  # 32 * 11 * 11 * 288 = 1.1M patch values
  large = jnp.zeros((32, 28, 28, 32))  # 32 * 28 * 28 * 288 = 7.2M
  fast_ops.conv_cpu_auto(small, jnp.zeros((3, 3, 32, 64)), (1, 1), "VALID", dimension_numbers=dn)
  assert calls == ["matmul"]
  out = fast_ops.conv_cpu_auto(large, jnp.zeros((3, 3, 32, 32)), (1, 1), "SAME", dimension_numbers=dn)
  assert calls == ["matmul"] and out.shape == (32, 28, 28, 32)


def _autodiff_kernel_grad(monkeypatch):
  """conv_matmul's kernel gradient as autodiff writes it, for every convolution."""
  monkeypatch.setattr(fast_ops, "STACKED_KERNEL_GRAD_MAX_CIN", 0)
  monkeypatch.setattr(fast_ops, "TRANSPOSED_KERNEL_GRAD", False)


@pytest.mark.parametrize("cin,kernel,strides,padding", [
    (1, (3, 3), (1, 1), "VALID"), (3, (3, 3), (2, 2), "SAME"), (8, (3, 3), (1, 1), "SAME"),
    (32, (3, 3), (1, 1), "VALID"), (4, (1, 1), (2, 2), "SAME")])
def test_each_kernel_gradient_form_equals_autodiffs(monkeypatch, cin, kernel, strides, padding):
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, cin))
  w = jax.random.normal(jax.random.key(1), kernel + (cin, 5)) * 0.2
  dn = ("NHWC", "HWIO", "NHWC")
  loss = lambda x, w: jnp.sum(jnp.sin(fast_ops.conv_matmul(x, w, strides, padding, dimension_numbers=dn)))
  stacked = kernel != (1, 1) and cin <= fast_ops.STACKED_KERNEL_GRAD_MAX_CIN
  # Which form: the stacked slices over few input channels, the transposed product otherwise (both custom VJPs).
  jaxpr = str(jax.make_jaxpr(loss)(x, w))
  assert f"name={'_conv_stacked_kernel_grad' if stacked else '_conv_transposed_kernel_grad'}" in jaxpr
  # A new function per setting: JAX would reuse a trace of the same function, made under the other one.
  grads = jax.jit(jax.grad(lambda x, w: loss(x, w), (0, 1)))(x, w)
  _autodiff_kernel_grad(monkeypatch)
  assert "custom_vjp_call" not in str(jax.make_jaxpr(lambda x, w: loss(x, w))(x, w))
  autodiff = jax.jit(jax.grad(lambda x, w: loss(x, w), (0, 1)))(x, w)
  for got, want in zip(grads, autodiff):  # the same sums in another order: round-off relative to the largest
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(want))))
  monkeypatch.undo()
  bf16 = jax.grad(lambda x, w: loss(x, w), (0, 1))(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  assert [(g.dtype, g.shape) for g in bf16] == [(jnp.bfloat16, x.shape), (jnp.bfloat16, w.shape)]


@pytest.mark.parametrize("cin", [1, 6])
def test_the_custom_kernel_gradients_differentiate_again_in_reverse_mode(monkeypatch, cin):
  # Hessian-vector products by reverse over reverse (forward mode is not defined for a custom VJP): the stacked
  # form (one input channel) and the transposed one (six).
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, cin))
  w = jax.random.normal(jax.random.key(1), (3, 3, cin, 4)) * 0.3
  v = jax.random.normal(jax.random.key(2), w.shape)
  dn = ("NHWC", "HWIO", "NHWC")

  def hvp():  # a new function per call: JAX would reuse a trace made under the other setting
    loss = lambda w: jnp.sum(jnp.sin(fast_ops.conv_matmul(x, w, (1, 1), "VALID", dimension_numbers=dn)))
    return jax.jit(jax.grad(lambda w: jnp.vdot(jax.grad(loss)(w), v)))(w)

  custom = hvp()
  _autodiff_kernel_grad(monkeypatch)
  np.testing.assert_allclose(custom, hvp(), rtol=1e-4, atol=1e-5)


def test_conv_matmul_falls_back_for_dilation():
  x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
  w = jax.random.normal(jax.random.key(1), (3, 3, 2, 3))
  dn = ("NHWC", "HWIO", "NHWC")
  np.testing.assert_allclose(
      fast_ops.conv_matmul(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=dn),
      lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=dn), rtol=1e-6)


@pytest.mark.parametrize("shape,window", [((2, 26, 26, 3), 2), ((2, 11, 11, 5), 2), ((1, 4, 6, 1), 2),
                                          ((2, 13, 11, 4), 3)])
def test_max_pool_reshape_equals_nn_max_pool_with_ties(shape, window):
  # relu of rounded values: many ties at zero and above it, the case where gradients could differ.
  x = jnp.round(jax.nn.relu(jax.random.normal(jax.random.key(0), shape)) * 2) / 2
  g = jax.random.normal(jax.random.key(1), (shape[0], shape[1] // window, shape[2] // window, shape[3]))
  xla = lambda x: nn.max_pool(x, (window, window), strides=(window, window))
  ours = lambda x: fast_ops.max_pool_reshape(x, window)
  np.testing.assert_array_equal(jax.jit(ours)(x), jax.jit(xla)(x))
  grad = lambda f, x=x: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * g)))(x)
  np.testing.assert_array_equal(grad(ours), grad(xla))
  constant = jnp.ones(shape)  # every element of every window ties
  np.testing.assert_array_equal(grad(ours, constant), grad(xla, constant))
  # A NaN anywhere in a window gives that window NaN, as XLA's pool does (a diverging run must not hide one).
  with_nan = x.at[:, -window, -window, 0].set(jnp.nan).at[:, 0, 0, -1].set(jnp.nan)
  np.testing.assert_array_equal(jax.jit(ours)(with_nan), jax.jit(xla)(with_nan))
  np.testing.assert_array_equal(jax.jit(jax.value_and_grad(lambda x: jnp.sum(ours(x) * g)))(with_nan)[0],
                                jax.jit(jax.value_and_grad(lambda x: jnp.sum(xla(x) * g)))(with_nan)[0])


@pytest.mark.parametrize("config_fn,shape", [
    (seed_ex1.get_config, (4, 28, 28, 1)),
    (default.get_config, (4, 28, 28, 1)),
    (fashion_mnist_bn.get_config, (4, 28, 28, 1)),
    (cifar10_resnet.get_config, (2, 32, 32, 3)),
])
def test_every_model_gives_the_same_logits_and_gradients_on_both_paths(config_fn, shape):
  outputs = {}
  for impl, pool in (("xla", "xla"), ("matmul", "reshape"), ("auto", "auto")):
    config = config_fn()
    config.model.conv_impl, config.model.pool_impl = impl, pool
    model = models.create_model(config.model, 10)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros(shape), train=False))(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), shape)

    def loss(params):
      logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.key(2)})
      return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), logits

    outputs[impl] = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  grads_xla, logits_xla = outputs["xla"]
  for impl in ("matmul", "auto"):
    grads, logits = outputs[impl]
    np.testing.assert_allclose(logits, logits_xla, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5), grads, grads_xla)


def test_auto_picks_the_fast_path_on_cpu_and_rejects_unknown_names():
  assert jax.default_backend() == "cpu"
  assert fast_ops.resolve_impl("auto") == "cpu_auto" and fast_ops.resolve_pool_impl("auto") == "reshape"
  assert fast_ops.resolve_impl("xla") == "xla"
  with pytest.raises(ValueError, match=r"config.model.conv_impl='cudnn'"):
    fast_ops.resolve_impl("cudnn")
  with pytest.raises(ValueError, match=r"config.model.pool_impl='avg'"):
    fast_ops.resolve_pool_impl("avg")


def test_the_benchmarks_kernel_gradient_forms_set_and_restore_fast_ops():
  from benchmarks import common
  assert common.parse_kernel_grad_form("autodiff") == (0, False)
  assert common.parse_kernel_grad_form("stacked+transposed") == (4, True)
  assert common.parse_kernel_grad_form("stacked64") == (64, False)
  with pytest.raises(ValueError, match="expected 'autodiff'"):
    common.parse_kernel_grad_form("stacked_4")
  defaults = fast_ops.STACKED_KERNEL_GRAD_MAX_CIN, fast_ops.TRANSPOSED_KERNEL_GRAD
  with common.kernel_grad_form("transposed"):
    assert (fast_ops.STACKED_KERNEL_GRAD_MAX_CIN, fast_ops.TRANSPOSED_KERNEL_GRAD) == (0, True)
  assert (fast_ops.STACKED_KERNEL_GRAD_MAX_CIN, fast_ops.TRANSPOSED_KERNEL_GRAD) == defaults

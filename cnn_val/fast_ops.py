"""CPU-fast convolution and max-pooling that compute exactly what `nn.Conv` and `nn.max_pool` compute.

XLA's CPU kernels for convolutions and for reduce-window (max-pool) backward passes are several times slower
than oneDNN's (see benchmarks/). Two rewrites avoid them:
- a KxK convolution as K*K shifted slices concatenated on the channel axis and one matmul ("im2col"), which
  XLA's CPU backend runs as a fast GEMM; its kernel gradient is one more matmul instead of autodiff's slow
  contraction over batch, rows and columns: over few input channels from the slices stacked on a leading axis,
  over more as the transposed product (g^T @ patches)^T;
- a non-overlapping max-pool as reshape + max, whose gradient goes to the first maximum of each window
  (as `nn.max_pool`'s select-and-scatter does) rather than being shared among ties (as `jnp.max`'s is).
Both are numerically equal to the XLA ops in outputs and gradients (tests/test_fast_ops.py).
On GPU and TPU XLA's own convolution is the right choice; `resolve_impl('auto')` picks by backend, and on
CPU picks per layer by the size of the im2col buffer (large buffers make the matmul memory-bound).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import flax.linen as nn

CONV_IMPLS = ("auto", "xla", "matmul")  # resolved: "xla", "matmul" or "cpu_auto" (per layer)
POOL_IMPLS = ("auto", "xla", "reshape")
_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


# The im2col buffer holds batch x output pixels x (kh * kw * Cin) values. Above about this many, its memory
# traffic costs more than XLA's convolution saves: measured per layer on a 2-core AVX-512 CPU
# (benchmarks/conv_layers.py), matmul won up to 3.6M (1.2-1.8x) and lost from 7.2M on (0.4-0.7x).
MATMUL_MAX_PATCH_ELEMENTS = 4_000_000


def _resolve(impl: str, choices: tuple[str, ...], field: str, on_cpu: str) -> str:
  if impl not in choices:
    raise ValueError(f"config.model.{field}={impl!r}: expected one of {choices}.")
  if impl == "auto":
    return on_cpu if jax.default_backend() == "cpu" else "xla"
  return impl


def resolve_impl(impl: str) -> str:
  """config.model.conv_impl: 'auto' -> 'cpu_auto' (per layer, by size) on CPU, 'xla' elsewhere."""
  return _resolve(impl, CONV_IMPLS, "conv_impl", on_cpu="cpu_auto")


def resolve_pool_impl(impl: str) -> str:
  """config.model.pool_impl: 'auto' -> 'reshape' on CPU, 'xla' elsewhere."""
  return _resolve(impl, POOL_IMPLS, "pool_impl", on_cpu="reshape")


def conv_matmul(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                preferred_element_type=None):
  """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels, computed as shifted slices + one matmul.

  Cases it does not cover (dilation, groups, other layouts) fall back to `lax.conv_general_dilated`.
  """
  simple = (
      lhs.ndim == 4 and all(d == 1 for d in (lhs_dilation or (1, 1)))
      and all(d == 1 for d in (rhs_dilation or (1, 1))) and feature_group_count == 1
      and batch_group_count == 1
      and (dimension_numbers is None or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == _NHWC_HWIO))
  if not simple:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  kh, kw, cin, _ = rhs.shape
  pads, ho, wo = _pads_and_output_size(lhs.shape, rhs.shape, window_strides, padding)
  x = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
  geometry = _Geometry(tuple(window_strides), ho, wo, x.shape)
  if preferred_element_type is None:
    if kh * kw > 1 and cin <= STACKED_KERNEL_GRAD_MAX_CIN:
      return _conv_stacked_kernel_grad(x, rhs, geometry, precision)
    if TRANSPOSED_KERNEL_GRAD:
      return _conv_transposed_kernel_grad(x, rhs, geometry, precision)
  return _padded_conv(x, rhs, geometry, precision, preferred_element_type)


class _Geometry(NamedTuple):
  """Where a convolution's kernel meets its padded input: strides, output height and width, the padded shape."""
  strides: tuple[int, int]
  ho: int
  wo: int
  padded_shape: tuple[int, ...]


def _im2col_dot(patches, rhs, precision, preferred_element_type=None):
  """The convolution as one product of its im2col `patches` (`_patches`) with the HWIO kernel `rhs`."""
  kh, kw, cin, cout = rhs.shape
  return jnp.dot(patches, rhs.reshape(kh * kw * cin, cout), precision=precision,
                 preferred_element_type=preferred_element_type)


def _padded_conv(x, rhs, geometry, precision, preferred_element_type=None):
  """The convolution of the padded input `x` with the HWIO kernel `rhs`: its patches times the kernel."""
  return _im2col_dot(_patches(x, rhs.shape[:2], geometry), rhs, precision, preferred_element_type)


def _input_grad(g, rhs, geometry, precision):
  """The gradient of the padded input: the output gradient times the kernel's transpose, summed back from the
  patches to the positions they were sliced from (the transpose of `_patches`), as autodiff computes it."""
  kh, kw, cin, cout = rhs.shape
  d_patches = jnp.dot(g, rhs.reshape(kh * kw * cin, cout).T, precision=precision)
  to_patches = lambda x_: _patches(x_, (kh, kw), geometry)
  (d_x,) = jax.linear_transpose(to_patches, jax.ShapeDtypeStruct(geometry.padded_shape, g.dtype))(d_patches)
  return d_x


def _shifted_slices(x, kernel_size, geometry):
  """The kh * kw slices of the padded input that meet each kernel tap, in the HWIO kernel's (i, j) order."""
  (sh, sw), ho, wo = geometry.strides, geometry.ho, geometry.wo
  return [x[:, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw, :]
          for i in range(kernel_size[0]) for j in range(kernel_size[1])]


def _patches(x, kernel_size, geometry):
  """The im2col matrix [n, ho, wo, kh * kw * cin], channel order (i, j, c) as the HWIO kernel flattened."""
  if tuple(kernel_size) == (1, 1):
    return _shifted_slices(x, kernel_size, geometry)[0]
  return jnp.concatenate(_shifted_slices(x, kernel_size, geometry), axis=-1)


# A convolution over few input channels (the first layer of an image model) has an im2col matrix only
# kh * kw * cin wide. Its kernel gradient as autodiff writes it, the patches contracted with the output gradient
# over batch, rows and columns, runs at 10-30 GFLOP/s on XLA's CPU GEMM. The same sums as one
# [kh * kw * cin, n] @ [n, cout] product from the shifted slices stacked on a leading axis ran 2.7-6.5x faster
# for one input channel and 1.6-2.6x for three; for four 1.04-1.75x; from eight on 0.84-1.37x alone, with no
# consistent gain, and slower inside the train step (`python -m benchmarks.conv_layers --tables=kernel_grad`,
# `python -m benchmarks.fused_steps --kernel_grads=autodiff,stacked64`; README, Performance). Those take the
# transposed product below.
#
# Reproducing a run trained before these forms, bit for bit, needs autodiff's form everywhere:
# STACKED_KERNEL_GRAD_MAX_CIN = 0 and TRANSPOSED_KERNEL_GRAD = False before the steps are built.
STACKED_KERNEL_GRAD_MAX_CIN = 4


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_stacked_kernel_grad(x, rhs, geometry, precision):
  """The im2col convolution of the padded input `x`, with the stacked kernel gradient. A custom VJP: reverse
  mode, to any order, works; forward mode (jax.jvp, forward-over-reverse Hessian-vector products) does not, as
  for any custom VJP (conv_impl='xla', or autodiff's form everywhere, above, for that). A custom JVP whose kernel
  tangent is written over the stacked slices would allow both, but XLA compiled its transpose back into
  autodiff's contraction (bit for bit, at its speed)."""
  return _padded_conv(x, rhs, geometry, precision)


def _conv_stacked_fwd(x, rhs, geometry, precision):
  return _conv_stacked_kernel_grad(x, rhs, geometry, precision), (x, rhs)


def _conv_stacked_bwd(geometry, precision, residuals, g):
  x, rhs = residuals
  kh, kw, cin, cout = rhs.shape
  taps = kh * kw
  # [taps, batch, ho, wo, cin] -> [taps, cin, batch * ho * wo]: each row one (tap, channel) of the patches.
  stacked = jnp.moveaxis(jnp.stack(_shifted_slices(x, (kh, kw), geometry)), -1, 1).reshape(taps, cin, -1)
  g_rows = g.reshape(-1, cout)
  d_rhs = jnp.einsum("kcn,no->kco", stacked, g_rows, precision=precision).reshape(rhs.shape)
  return _input_grad(g, rhs, geometry, precision), d_rhs


_conv_stacked_kernel_grad.defvjp(_conv_stacked_fwd, _conv_stacked_bwd)


# Over more input channels the kernel gradient is the patches' transpose times the output gradient, [kh kw cin, n]
# @ [n, cout]; autodiff writes it as a contraction over both operands' leading axis into a [kh kw cin, cout]
# result. The same sums into the transposed [cout, kh kw cin] result, then transposed (small), ran 1.05-2.5x faster
# alone from three input channels on (0.76-2.45x for one, where the stacked form is faster still) and the fused
# train step 1.14-1.20x for the BatchNorm ConvNet, 1.06x for SeedCNNDropout (`python -m benchmarks.conv_layers
# --tables=kernel_grad`; `python -m benchmarks.fused_steps --kernel_grads=autodiff,stacked`; README,
# Performance). The optimization barrier keeps XLA's simplifier from folding the transpose back into autodiff's
# form, which it does otherwise (checked in the compiled step's HLO).
TRANSPOSED_KERNEL_GRAD = True


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transposed_kernel_grad(x, rhs, geometry, precision):
  """The im2col convolution of the padded input `x`, whose kernel gradient is (g^T @ patches)^T. A custom VJP: as
  for `_conv_stacked_kernel_grad`, reverse mode works to any order, forward mode does not. The backward pass
  keeps the patches the forward pass made, as autodiff would."""
  return _padded_conv(x, rhs, geometry, precision)


def _conv_transposed_fwd(x, rhs, geometry, precision):
  patches = _patches(x, rhs.shape[:2], geometry)
  return _im2col_dot(patches, rhs, precision), (patches, rhs)


def _conv_transposed_bwd(geometry, precision, residuals, g):
  patches, rhs = residuals
  kh, kw, cin, cout = rhs.shape
  g_rows = g.reshape(-1, cout)
  d_rhs_t = jnp.dot(g_rows.T, patches.reshape(-1, kh * kw * cin), precision=precision)  # [cout, kh kw cin]
  d_rhs = lax.optimization_barrier(d_rhs_t).T.reshape(rhs.shape)
  return _input_grad(g, rhs, geometry, precision), d_rhs


_conv_transposed_kernel_grad.defvjp(_conv_transposed_fwd, _conv_transposed_bwd)


def _windows(x, window: int):
  n, h, w, c = x.shape
  ho, wo = h // window, w // window
  return x[:, : ho * window, : wo * window, :].reshape(n, ho, window, wo, window, c)


def _pads_and_output_size(lhs_shape, rhs_shape, window_strides, padding):
  """Explicit (top, bottom), (left, right) pads and the output height and width of an NHWC/HWIO conv."""
  kh, kw = rhs_shape[:2]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs_shape[1:3], (kh, kw), window_strides, padding)
  pads = tuple(tuple(p) for p in padding)
  ho = (lhs_shape[1] + sum(pads[0]) - kh) // window_strides[0] + 1
  wo = (lhs_shape[2] + sum(pads[1]) - kw) // window_strides[1] + 1
  return pads, ho, wo


def conv_cpu_auto(lhs, rhs, window_strides, padding, **kwargs):
  """`conv_matmul` for layers whose im2col buffer is small enough to win, XLA's convolution otherwise."""
  if lhs.ndim != 4:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
  kh, kw, cin, _ = rhs.shape
  _, ho, wo = _pads_and_output_size(lhs.shape, rhs.shape, window_strides, padding)
  if lhs.shape[0] * ho * wo * kh * kw * cin <= MATMUL_MAX_PATCH_ELEMENTS:
    return conv_matmul(lhs, rhs, window_strides, padding, **kwargs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def max_pool_reshape(x, window: int = 2):
  """`nn.max_pool(x, (window, window), strides=(window, window))` with VALID padding, via reshape + max.

  The gradient goes to the first maximum of each window in row-major order, as XLA's select-and-scatter
  does for `nn.max_pool`, so ties (common after a ReLU) give the same gradients as the XLA path.
  """
  h, w = x.shape[1:3]
  # Rows and columns past the last whole window take no part; slicing them off here lets autodiff give them a
  # zero gradient, and the pool itself sees whole windows only.
  return _max_pool_whole_windows(x[:, : h // window * window, : w // window * window, :], window)


def _first_max(x, window: int):
  """Each window's maximum and the row-major position (0 .. window^2 - 1) of its first occurrence, in one pass
  over the window's positions. The maximum is `jnp.max`'s, a NaN included (XLA's maximum propagates it)."""
  windows = _windows(x, window)
  best = windows[:, :, 0, :, 0, :]
  dtype = jnp.int8 if window * window <= 127 else jnp.int32  # a quarter of float32's memory for usual windows
  index = jnp.zeros(best.shape, dtype)
  for position in range(1, window * window):
    i, j = divmod(position, window)
    value = windows[:, :, i, :, j, :]
    index = jnp.where(value > best, dtype(position), index)  # strictly greater: the first maximum stays
    best = jnp.maximum(best, value)
  return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_whole_windows(x, window: int):
  return jnp.max(_windows(x, window), axis=(2, 4))


def _max_pool_fwd(x, window):
  # The backward pass keeps only where each maximum was, chosen here from the same values as the output. It
  # used to find the maximum again by comparing the saved input with the saved output (`x == out`): inside the
  # jitted train step of a BatchNorm model that gave wrong gradients (conv and BatchNorm gradients off by up to
  # about their own size), while the same code on the same values outside the step, eager execution and XLA's own
  # pool all agreed. Comparing floats that XLA may compute in different fusions is not safe; an index is.
  # tests/test_fast_ops.py checks every model's gradients under jit against XLA's pool.
  out, index = _first_max(x, window)
  return out, index


def _max_pool_bwd(window, index, g):
  zero = jnp.zeros((), g.dtype)
  rows = [jnp.stack([jnp.where(index == i * window + j, g, zero) for j in range(window)], axis=3)
          for i in range(window)]  # each [n, ho, wo, window (j), c]
  n, ho, wo, c = g.shape
  return (jnp.stack(rows, axis=2).reshape(n, ho * window, wo * window, c),)  # from [n, ho, i, wo, j, c]


_max_pool_whole_windows.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x, window: int, impl: str):
  """Non-overlapping VALID max-pooling by `impl` ('xla' or 'reshape', as resolved by resolve_pool_impl)."""
  if impl == "reshape":
    return max_pool_reshape(x, window)
  return nn.max_pool(x, (window, window), strides=(window, window))

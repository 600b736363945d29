"""fast_ops' earlier max-pool gradient, kept to measure the current one against (benchmarks/conv_layers.py per
layer, benchmarks/fused_steps.py --earlier_ops in the whole step): each window's first maximum found by a cumulative
sum instead of unrolled over the window's positions. Both give the same gradients, bit for bit."""

import contextlib

import jax
import jax.numpy as jnp

from cnn_val import fast_ops


@jax.custom_vjp
def max_pool_cumsum(x):
  """2x2 max-pool whose gradient finds each window's first maximum by a cumulative sum (the earlier form)."""
  return jnp.max(fast_ops._windows(x, 2), axis=(2, 4))


def _cumsum_fwd(x):
  out = max_pool_cumsum(x)
  return out, (x, out)


def _cumsum_bwd(res, g):
  x, out = res
  windows = fast_ops._windows(x, 2)
  is_max = windows == out[:, :, None, :, None, :]
  in_row = jnp.cumsum(is_max, axis=4, dtype=jnp.int32)
  row_total = in_row[:, :, :, :, -1:, :]
  rows_before = jnp.cumsum(row_total, axis=2, dtype=jnp.int32) - row_total
  first = is_max & (rows_before + in_row == 1)
  grad = jnp.where(first, g[:, :, None, :, None, :], jnp.zeros((), g.dtype)).reshape(
      x.shape[0], out.shape[1] * 2, out.shape[2] * 2, x.shape[3])
  pad = ((0, 0), (0, x.shape[1] - grad.shape[1]), (0, x.shape[2] - grad.shape[2]), (0, 0))
  return (jnp.pad(grad, pad),)


max_pool_cumsum.defvjp(_cumsum_fwd, _cumsum_bwd)


def _earlier_pool(x, window: int = 2):
  assert window == 2, "max_pool_cumsum: 2x2 windows only"
  return max_pool_cumsum(x)


@contextlib.contextmanager
def earlier_ops():
  """While active, models trace the earlier max-pool gradient: a step first called inside it compiles with it,
  for side-by-side timing against the current one."""
  saved = fast_ops.max_pool_reshape
  fast_ops.max_pool_reshape = _earlier_pool
  try:
    yield
  finally:
    fast_ops.max_pool_reshape = saved

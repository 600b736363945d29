"""A variant of `fast_ops.max_pool_reshape` tried and not adopted, kept to measure against: its gradient finds
each window's first maximum by one comparison per window position, unrolled, instead of by cumulative sums.
Both give the same gradients, bit for bit (tests/test_fast_ops.py). On its own it is several times faster; in a
whole train step it gains nothing measurable (README, Performance, has the figures): benchmarks/conv_layers.py
per op, benchmarks/fused_steps.py --unrolled_pool in the step."""

import contextlib
import functools

import jax
import jax.numpy as jnp

from cnn_val import fast_ops


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_unrolled(x, window: int = 2):
  """`fast_ops.max_pool_reshape` with the unrolled first-maximum gradient."""
  return jnp.max(fast_ops._windows(x, window), axis=(2, 4))


def _unrolled_fwd(x, window):
  out = max_pool_unrolled(x, window)
  return out, (x, out)


def _unrolled_bwd(window, res, g):
  x, out = res
  windows = fast_ops._windows(x, window)
  # Each window position in row-major order takes the gradient where it holds the maximum and no earlier
  # position did: the first maximum, as select-and-scatter chooses.
  taken = jnp.zeros(out.shape, bool)
  zero = jnp.zeros((), g.dtype)
  rows = []
  for i in range(window):
    row = []
    for j in range(window):
      first = (windows[:, :, i, :, j, :] == out) & ~taken
      taken = taken | first
      row.append(jnp.where(first, g, zero))
    rows.append(jnp.stack(row, axis=3))  # [n, ho, wo, window (j), c]
  grad = jnp.stack(rows, axis=2).reshape(  # [n, ho, window (i), wo, window (j), c]
      x.shape[0], out.shape[1] * window, out.shape[2] * window, x.shape[3])
  pad = ((0, 0), (0, x.shape[1] - grad.shape[1]), (0, x.shape[2] - grad.shape[2]), (0, 0))
  return (jnp.pad(grad, pad),)


max_pool_unrolled.defvjp(_unrolled_fwd, _unrolled_bwd)


@contextlib.contextmanager
def unrolled_pool():
  """While active, models trace `max_pool_unrolled` for the reshape pool: a step first called inside it compiles
  with it, for side-by-side timing against the current gradient."""
  saved = fast_ops.max_pool_reshape
  fast_ops.max_pool_reshape = max_pool_unrolled
  try:
    yield
  finally:
    fast_ops.max_pool_reshape = saved

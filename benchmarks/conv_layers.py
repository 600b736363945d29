"""Per-layer convolution cost on this backend: XLA's convolution against the im2col matmul (forward and
backward of one layer, jitted), with each layer's im2col buffer size. It is the measurement behind
`fast_ops.MATMUL_MAX_PATCH_ELEMENTS`, the size above which `conv_impl='auto'` keeps XLA's convolution.

    .venv/bin/python -m benchmarks.conv_layers
"""

import time

from absl import app
import jax
from jax import lax
import jax.numpy as jnp

from cnn_val import fast_ops

LAYERS = [  # (height = width, Cin, Cout, padding): the convolutions of the models in configs/
    (28, 1, 32, "VALID"), (28, 1, 32, "SAME"), (28, 32, 32, "SAME"), (13, 32, 64, "VALID"),
    (14, 32, 64, "SAME"), (14, 64, 64, "SAME"), (7, 64, 128, "SAME")]
DN = ("NHWC", "HWIO", "NHWC")


def _ms(fn, *args, reps=20):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(reps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / reps * 1e3


def main(argv):
  del argv
  print(f"{jax.default_backend()} backend, JAX {jax.__version__}; threshold "
        f"{fast_ops.MATMUL_MAX_PATCH_ELEMENTS:,} patch values")
  print(f"{'batch':>5s} {'layer':>22s} {'patch values':>13s} {'xla ms':>8s} {'matmul ms':>10s} {'xla/matmul':>10s}")
  for n in (32, 256):
    for size, cin, cout, pad in LAYERS:
      x = jax.random.normal(jax.random.key(0), (n, size, size, cin))
      w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
      times = []
      for conv in (lax.conv_general_dilated, fast_ops.conv_matmul):
        grad = jax.jit(jax.grad(lambda x, w, conv=conv: jnp.sum(conv(x, w, (1, 1), pad, dimension_numbers=DN) ** 2),
                                (0, 1)))
        times.append(_ms(grad, x, w))
      out = size if pad == "SAME" else size - 2
      patch = n * out * out * 9 * cin
      print(f"{n:5d} {f'{size}x{size} {cin}->{cout} {pad}':>22s} {patch:13,d} {times[0]:8.2f} {times[1]:10.2f} "
            f"{times[0] / times[1]:9.2f}x")


if __name__ == "__main__":
  app.run(main)

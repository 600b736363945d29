"""Per-layer cost of the CPU rewrites in `fast_ops`, forward and backward of one layer (jitted, cases
alternating round by round, median):

- convolutions (each call jitted on its own, as the per-step loop runs its step): XLA's convolution against the
  im2col matmul, with each layer's im2col buffer size (the measurement behind
  `fast_ops.MATMUL_MAX_PATCH_ELEMENTS`, the size above which `conv_impl='auto'` keeps XLA's convolution);
- max-pooling (2x2): XLA's reduce-window (its gradient a select-and-scatter) against `fast_ops.max_pool_reshape`,
  whose forward pass keeps the position of each window's first maximum for the gradient. Both give identical
  gradients.

    .venv/bin/python -m benchmarks.conv_layers [--batch_sizes=32,256] [--rounds=5] [--seconds=0.5] [--tables=conv,pool]
"""

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp

from benchmarks import common
from cnn_val import fast_ops

flags.DEFINE_string("batch_sizes", "32,256", "Batch sizes.")
flags.DEFINE_integer("rounds", 5, "Alternating rounds; the median is reported.")
flags.DEFINE_float("seconds", 0.5, "Approximate time per measurement.")
flags.DEFINE_list("tables", ["conv", "pool"], "Which tables to measure: conv, pool.")
FLAGS = flags.FLAGS

LAYERS = [  # (height = width, Cin, Cout, padding): the convolutions of the models in configs/
    (28, 1, 32, "VALID"), (28, 1, 32, "SAME"), (28, 32, 32, "SAME"), (13, 32, 64, "VALID"),
    (14, 32, 64, "SAME"), (14, 64, 64, "SAME"), (7, 64, 128, "SAME")]
POOLS = [(26, 32), (11, 64), (28, 32), (14, 64)]  # (height = width, channels): the max-pools' inputs
DN = ("NHWC", "HWIO", "NHWC")


def _ms_per_call(grads, args: tuple) -> list[float]:
  """Median ms per call of each jitted gradient, one call at a time as the per-step loop calls its step (inside
  a loop, as fused chunks and micro-batches run, XLA's CPU convolution is many times slower: README,
  Performance), measured alternately by `common.measure`."""
  def runner(fn):
    def run(num_calls):
      for _ in range(num_calls):
        out = fn(*args)
      jax.block_until_ready(out)
    return run
  rates = common.measure([(runner(jax.jit(g)), 1) for g in grads], FLAGS.rounds, FLAGS.seconds)
  return [1e3 / r for r in rates]  # calls/s -> ms per call


def main(argv):
  del argv
  batch_sizes = [int(b) for b in FLAGS.batch_sizes.split(",")]
  print(f"{jax.default_backend()} backend, JAX {jax.__version__}; threshold "
        f"{fast_ops.MATMUL_MAX_PATCH_ELEMENTS:,} patch values; ms per forward + backward (gradients of input "
        f"and kernel), median of {FLAGS.rounds} rounds\n")
  unknown = set(FLAGS.tables) - {"conv", "pool"}
  if unknown:
    raise app.UsageError(f"--tables: unknown {sorted(unknown)}; expected conv and/or pool.")
  if "conv" in FLAGS.tables:
    _conv_table(batch_sizes)
  if "pool" in FLAGS.tables:
    _pool_table(batch_sizes)


def _conv_table(batch_sizes):
  print("| batch | layer | patch values | xla ms | matmul ms | xla / matmul |")
  print("| --- | --- | --- | --- | --- | --- |")
  convs = (lax.conv_general_dilated, fast_ops.conv_matmul)
  for n in batch_sizes:
    for size, cin, cout, pad in LAYERS:
      x = jax.random.normal(jax.random.key(0), (n, size, size, cin))
      w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
      xla, mm = _ms_per_call([jax.grad(lambda x, w, conv=conv: jnp.sum(
          conv(x, w, (1, 1), pad, dimension_numbers=DN) ** 2), (0, 1)) for conv in convs], (x, w))
      out = size if pad == "SAME" else size - 2
      print(f"| {n} | {size}x{size} {cin}->{cout} {pad} | {n * out * out * 9 * cin:,} | {xla:.2f} | {mm:.2f} | "
            f"{xla / mm:.2f}x |")


def _pool_table(batch_sizes):
  print("\n| batch | max-pool 2x2 input | xla ms | reshape ms | xla / reshape |")
  print("| --- | --- | --- | --- | --- |")
  pools = (lambda x: fast_ops.max_pool(x, 2, "xla"), lambda x: fast_ops.max_pool_reshape(x, 2))
  for n in batch_sizes:
    for size, c in POOLS:
      # Rounded values after a ReLU: ties within windows, as after real activations.
      x = jax.nn.relu(jnp.round(jax.random.normal(jax.random.key(0), (n, size, size, c)) * 2))
      xla, reshape = _ms_per_call([jax.grad(lambda x, pool=pool: jnp.sum(pool(x) ** 2)) for pool in pools], (x,))
      print(f"| {n} | {size}x{size}x{c} | {xla:.3f} | {reshape:.3f} | {xla / reshape:.2f}x |")


if __name__ == "__main__":
  app.run(main)

"""Per-layer cost of the CPU rewrites in `fast_ops`, forward and backward of one layer (jitted, cases
alternating round by round, median):

- convolutions (each call jitted on its own, as the per-step loop runs its step): XLA's convolution against the
  im2col matmul, with each layer's im2col buffer size (the measurement behind
  `fast_ops.MATMUL_MAX_PATCH_ELEMENTS`, the size above which `conv_impl='auto'` keeps XLA's convolution);
- max-pooling (2x2): XLA's reduce-window (its gradient a select-and-scatter) against `fast_ops.max_pool_reshape`,
  whose forward pass keeps the position of each window's first maximum for the gradient. Both give identical
  gradients;
- the kernel gradient of the im2col matmul alone (`--tables=kernel_grad`, not measured by default), in its three
  forms: the contraction over batch, rows and columns that autodiff writes; one [kh * kw * cin, n] @ [n, cout]
  product from the shifted slices stacked on a leading axis (`fast_ops.STACKED_KERNEL_GRAD_MAX_CIN`, up to which
  `conv_matmul` uses it); and (g^T @ patches)^T, the transposed product (`fast_ops.TRANSPOSED_KERNEL_GRAD`, which
  `conv_matmul` uses for the other convolutions), per number of input channels.

    .venv/bin/python -m benchmarks.conv_layers [--batch_sizes=32,256] [--rounds=5] [--seconds=0.5]
        [--tables=conv,pool,kernel_grad]
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
flags.DEFINE_list("tables", ["conv", "pool"], "Which tables to measure: conv, pool, kernel_grad.")
FLAGS = flags.FLAGS

LAYERS = [  # (height = width, Cin, Cout, padding): the convolutions of the models in configs/
    (28, 1, 32, "VALID"), (28, 1, 32, "SAME"), (28, 32, 32, "SAME"), (13, 32, 64, "VALID"),
    (14, 32, 64, "SAME"), (14, 64, 64, "SAME"), (7, 64, 128, "SAME")]
KERNEL_GRAD_LAYERS = [  # (height = width, Cin, Cout, padding): first layers over 1-16 channels, then two wide ones
    (28, 1, 32, "VALID"), (28, 1, 32, "SAME"), (32, 3, 16, "SAME"), (32, 3, 32, "SAME"), (28, 4, 32, "VALID"),
    (28, 8, 32, "VALID"), (28, 16, 32, "VALID"), (13, 32, 64, "VALID"), (14, 32, 64, "SAME")]
POOLS = [(26, 32), (11, 64), (28, 32), (14, 64)]  # (height = width, channels): the max-pools' inputs
DN = ("NHWC", "HWIO", "NHWC")


def _ms_per_call(grads, args: tuple) -> list[float]:
  """Median ms per call of each gradient (jitted here unless compiled already), one call at a time as the
  per-step loop calls its step (inside a loop, as fused chunks and micro-batches run, XLA's CPU convolution is
  many times slower: README, Performance), measured alternately by `common.measure`."""
  def runner(fn):
    def run(num_calls):
      for _ in range(num_calls):
        out = fn(*args)
      jax.block_until_ready(out)
    return run
  fns = [g if isinstance(g, jax.stages.Compiled) else jax.jit(g) for g in grads]
  rates = common.measure([(runner(fn), 1) for fn in fns], FLAGS.rounds, FLAGS.seconds)
  return [1e3 / r for r in rates]  # calls/s -> ms per call


def main(argv):
  del argv
  batch_sizes = [int(b) for b in FLAGS.batch_sizes.split(",")]
  print(f"{jax.default_backend()} backend, JAX {jax.__version__}; threshold "
        f"{fast_ops.MATMUL_MAX_PATCH_ELEMENTS:,} patch values; ms per forward + backward (gradients of input "
        f"and kernel; the kernel gradient alone in the kernel_grad table), median of {FLAGS.rounds} rounds\n")
  unknown = set(FLAGS.tables) - {"conv", "pool", "kernel_grad"}
  if unknown:
    raise app.UsageError(f"--tables: unknown {sorted(unknown)}; expected some of conv, pool, kernel_grad.")
  if "conv" in FLAGS.tables:
    _conv_table(batch_sizes)
  if "pool" in FLAGS.tables:
    _pool_table(batch_sizes)
  if "kernel_grad" in FLAGS.tables:
    _kernel_grad_table(batch_sizes)


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


def _compiled_with(form: str, fn, args):
  """`fn` compiled while `conv_matmul` takes its kernel gradient in `form` (`common.kernel_grad_form`)."""
  with common.kernel_grad_form(form):  # a new function each time: JAX would reuse an old trace
    return jax.jit(lambda *a: fn(*a)).lower(*args).compile()


def _kernel_grad_table(batch_sizes):
  print("\n| batch | layer | GFLOP | autodiff's contraction ms | stacked slices ms | transposed product ms | "
        "autodiff / stacked | autodiff / transposed | largest difference, relative |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for n in batch_sizes:
    for size, cin, cout, pad in KERNEL_GRAD_LAYERS:
      x = jax.random.normal(jax.random.key(0), (n, size, size, cin))
      w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
      out = size if pad == "SAME" else size - 2
      g = jax.random.normal(jax.random.key(2), (n, out, out, cout))
      # The kernel gradient alone, for a given output gradient: the input gradient is not computed.
      grad = lambda w, x, g: jax.vjp(lambda w: fast_ops.conv_matmul(x, w, (1, 1), pad, dimension_numbers=DN),
                                     w)[1](g)[0]
      fns = [_compiled_with(form, grad, (w, x, g)) for form in ("autodiff", f"stacked{cin}", "transposed")]
      autodiff_grad = fns[0](w, x, g)
      diff = max(float(jnp.max(jnp.abs(autodiff_grad - fn(w, x, g))) / jnp.max(jnp.abs(autodiff_grad)))
                 for fn in fns[1:])
      autodiff, stacked, transposed = _ms_per_call(fns, (w, x, g))
      print(f"| {n} | {size}x{size} {cin}->{cout} {pad} | {2 * n * out * out * 9 * cin * cout / 1e9:.3f} | "
            f"{autodiff:.3f} | {stacked:.3f} | {transposed:.3f} | {autodiff / stacked:.2f}x | "
            f"{autodiff / transposed:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
  app.run(main)

"""Shared pieces of the benchmarks: cnn_val's own pmapped train step on synthetic batches, and alternating
measurement (every case once per round, median over rounds) so that ratios in one table share the machine's
state."""

import contextlib
import functools
import re
import time

import jax
import numpy as np

from cnn_val import fast_ops, models, optim, parallel, steps
from cnn_val.configs import default, fashion_mnist_bn, seed_ex1

# The models the speed benchmarks compare, by the config that defines each.
MODEL_CONFIGS = {"SeedCNN": seed_ex1.get_config, "SeedCNNDropout": default.get_config,
                 "ConvNet-BN": fashion_mnist_bn.get_config}


def synthetic_batches(batch_size, num_batches=8, image_shape=(28, 28, 1), num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 255, (batch_size * num_batches,) + tuple(image_shape), dtype=np.uint8)
  labels = rng.integers(0, num_classes, batch_size * num_batches).astype(np.int32)
  return images, labels


def cnn_val_runner(config, batch_size, num_devices, image_shape=(28, 28, 1), wait_each_step=False):
  """`run(num_steps)` for the train step exactly as `train_and_evaluate` builds it from `config`.

  `wait_each_step` blocks on every step's outputs, as `parallel.pmap_step` does for several CPU devices."""
  config = config.copy_and_resolve_references()
  config.batch_size = batch_size
  tx = optim.create_optimizer(config.optim, 100, 1)
  state = steps.create_train_state(models.create_model(config.model, 10), tx, jax.random.key(0), image_shape)
  step = steps.pmapped_steps(config, 10, tx, jax.local_devices()[:num_devices]).train
  images, labels = synthetic_batches(batch_size, image_shape=image_shape)
  batches = [{"image": images[i:i + batch_size].reshape((num_devices, -1) + tuple(image_shape)),
              "label": labels[i:i + batch_size].reshape(num_devices, -1)}
             for i in range(0, len(labels), batch_size)]
  key = jax.random.key(1)
  holder = [state]

  def run(num_steps):
    s = holder[0]
    for i in range(num_steps):
      s, metrics = step(s, batches[i % len(batches)], key)
      if wait_each_step:
        jax.block_until_ready(metrics)
    jax.block_until_ready(metrics)
    holder[0] = s

  return run


def cnn_val_eval_runner(config, batch_size, micro_batch_size, image_shape=(28, 28, 1)):
  """`run(num_batches)` for the eval step as `train_and_evaluate` builds it from `config` (1 device), computed in
  micro-batches of `micro_batch_size` examples (the batch size: not split)."""
  model = models.create_model(config.model, 10, axis_name=parallel.AXIS, dtype=config.dtype)
  state = steps.create_train_state(model, optim.create_optimizer(config.optim, 100, 1), jax.random.key(0),
                                   image_shape)
  step = parallel.pmap_step(functools.partial(steps.eval_step, model=model, num_classes=10,
                                              micro_batch_size=micro_batch_size),
                            jax.local_devices()[:1], batch_argnums=(1,), num_args=2)
  images, labels = synthetic_batches(batch_size, num_batches=4, image_shape=image_shape)
  batches = [{"image": images[i:i + batch_size][None], "label": labels[i:i + batch_size][None]}
             for i in range(0, len(labels), batch_size)]

  def run(num_batches):
    for i in range(num_batches):
      sums = step(state, batches[i % len(batches)])
    jax.block_until_ready(sums)

  return run


def parse_kernel_grad_form(form: str) -> tuple[int, bool]:
  """A kernel-gradient form for `conv_matmul`, as (`fast_ops.STACKED_KERNEL_GRAD_MAX_CIN`,
  `fast_ops.TRANSPOSED_KERNEL_GRAD`): `autodiff` (autodiff's contraction for every convolution), or `stacked`
  (the stacked slices up to 4 input channels; `stackedN`: up to N), `transposed` (the transposed product for the
  other convolutions), or both joined by `+` (`stacked+transposed`: fast_ops' defaults)."""
  if form == "autodiff":
    return 0, False
  max_cin, transposed = 0, False
  for part in form.split("+"):
    if part == "transposed":
      transposed = True
    elif part.startswith("stacked") and (part == "stacked" or part[len("stacked"):].isdigit()):
      max_cin = int(part[len("stacked"):] or 4)
    else:
      raise ValueError(f"kernel-gradient form {form!r}: expected 'autodiff', or 'stacked' (or 'stackedN', N input "
                       "channels), 'transposed', or both joined by '+', e.g. 'stacked+transposed'.")
  return max_cin, transposed


@contextlib.contextmanager
def kernel_grad_form(form: str):
  """`conv_matmul`'s kernel gradient in `form` (`parse_kernel_grad_form`) inside the block, fast_ops' settings
  restored after it. They are read when a step is traced: compile what should use them inside the block (JAX
  reuses the trace of a function it has traced, so trace a new function)."""
  saved = fast_ops.STACKED_KERNEL_GRAD_MAX_CIN, fast_ops.TRANSPOSED_KERNEL_GRAD
  fast_ops.STACKED_KERNEL_GRAD_MAX_CIN, fast_ops.TRANSPOSED_KERNEL_GRAD = parse_kernel_grad_form(form)
  try:
    yield
  finally:
    fast_ops.STACKED_KERNEL_GRAD_MAX_CIN, fast_ops.TRANSPOSED_KERNEL_GRAD = saved


def alternating_order(num_cases: int, round_index: int) -> list[int]:
  """The cases' order in a round: forwards in even rounds, backwards in odd ones, so that no case always runs
  right after the same other one."""
  order = list(range(num_cases))
  return order if round_index % 2 == 0 else order[::-1]


def measure(cases, rounds: int, seconds: float) -> list[float]:
  """Median images/s of each `(run, batch_size)` case, measured alternately over `rounds` rounds (the order
  reversed every other round)."""
  num_steps = []
  for run, batch_size in cases:
    run(3)  # compile and warm up
    start = time.perf_counter()
    run(3)
    num_steps.append(max(3, int(seconds / ((time.perf_counter() - start) / 3))))
  rates = [[] for _ in cases]
  for r in range(rounds):
    for i in alternating_order(len(cases), r):
      run, batch_size = cases[i]
      start = time.perf_counter()
      run(num_steps[i])
      rates[i].append(num_steps[i] * batch_size / (time.perf_counter() - start))
  return [float(np.median(r)) for r in rates]


def print_ratio_table(cases, rates, *, what: str, ratio_to: str, flops: dict | None = None,
                      peak: float | None = None) -> None:
  """A markdown table, one row per `(model, batch, label, _)` case: images/s and the ratio to its group's first
  case; with `flops` ({(model, batch): FLOPs per image}) and `peak` (FLOP/s, `matmul_peak_flops` in the same
  run), also GFLOP/s and the share of that peak."""
  shares = flops is not None and peak
  print(f"| model | batch | {what} | images/s | vs {ratio_to} |" + (" GFLOP/s | share of peak |" if shares else ""))
  print("| --- " * (7 if shares else 5) + "|")
  base = {}
  for (name, batch_size, label, _), rate in zip(cases, rates):
    base.setdefault((name, batch_size), rate)
    row = f"| {name} | {batch_size} | {label} | {rate:,.0f} | {rate / base[(name, batch_size)]:.2f}x |"
    if shares:
      row += f" {rate * flops[name, batch_size] / 1e9:,.0f} | {rate * flops[name, batch_size] / peak:.0%} |"
    print(row)


def measure_with_peak(cases, rounds: int, seconds: float) -> tuple[list[float], float]:
  """`measure` between two `matmul_peak_flops`, both printed: the rates, and the peak a share is read against
  (the mean of the two)."""
  before = matmul_peak_flops()
  rates = measure(cases, rounds, seconds)
  after = matmul_peak_flops()
  print(f"float32 matmul peak (a {2048 if jax.devices()[0].platform == 'cpu' else 8192}^3 product) "
        f"{before / 1e9:,.0f} GFLOP/s before the table, {after / 1e9:,.0f} after; shares against their mean")
  return rates, (before + after) / 2


def _lowered_step(config, batch_size: int, image_shape, num_classes: int, *, evaluation: bool = False):
  """`config`'s unsplit train step (micro_batch_size = batch), or with `evaluation` its eval step, lowered for
  the host CPU on a batch of zeros."""
  import jax.numpy as jnp
  tx = optim.create_optimizer(config.optim, 100, 1)
  model = models.create_model(config.model, num_classes, axis_name=None, dtype=config.dtype)
  with jax.default_device(jax.devices("cpu")[0]):
    state = steps.create_train_state(model, tx, jax.random.key(0), image_shape)
    batch = {"image": jnp.zeros((batch_size,) + tuple(image_shape), jnp.uint8),
             "label": jnp.zeros((batch_size,), jnp.int32)}
    if evaluation:
      step = jax.jit(functools.partial(steps.eval_step, model=model, num_classes=num_classes, axis_name=None))
      return step.lower(state, batch)
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, axis_name=None,
                                     micro_batch_size=batch_size, signals=config.get("signals", True)))
    return step.lower(state, batch, jax.random.key(1))


def flops_per_image(config, batch_size: int, image_shape=(28, 28, 1), num_classes: int = 10, *,
                    evaluation: bool = False) -> float:
  """FLOPs of one training image (with `evaluation`: of one image through the eval step, the forward pass in
  eval mode and the metric sums), from XLA's cost analysis of `config`'s step compiled for one device.

  Counted on the unsplit step (micro_batch_size = batch): XLA's analysis counts a loop's body once, so a
  micro-batched or fused step would be undercounted by its trip count; the arithmetic is the same. Always
  compiled for the host CPU: on a GPU, XLA's analysis leaves out the convolutions it hands to cuDNN (0.93
  against 14.98 MFLOP/image for SeedCNNDropout on an H200)."""
  lowered = _lowered_step(config, batch_size, image_shape, num_classes, evaluation=evaluation)
  analysis = lowered.compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"]) / batch_size


_DOT = re.compile(r"stablehlo\.dot_general .*?(?:batching_dims = \[([\d, ]*)\] x \[([\d, ]*)\], )?"
                  r"contracting_dims = \[([\d, ]*)\] x \[([\d, ]*)\].*?: \(tensor<([\dx]+)xf32>, "
                  r"tensor<([\dx]+)xf32>\)")


def step_matmuls(config, batch_size: int, image_shape=(28, 28, 1), num_classes: int = 10) -> list[tuple]:
  """The float32 matrix products of `config`'s train step as a fused chunk runs it on a CPU (every convolution
  a matmul: steps.chunk_config), read from the lowered program: (lhs shape, rhs shape, (contracting, batch)
  dimension numbers), one entry per product, repeats included."""
  text = _lowered_step(steps.chunk_config(config, "cpu"), batch_size, image_shape, num_classes).as_text()
  ints = lambda s: tuple(int(x) for x in s.split(",") if x.strip()) if s else ()
  shape = lambda s: tuple(int(x) for x in s.split("x"))
  return [(shape(m[4]), shape(m[5]), ((ints(m[2]), ints(m[3])), (ints(m[0]), ints(m[1]))))
          for m in _DOT.findall(text)]


def time_matmuls(matmuls: list[tuple], seconds: float = 0.2) -> dict:
  """{(lhs, rhs, dims): (FLOPs, seconds per product)} for each distinct product of `matmuls` (step_matmuls), each
  timed alone on the default device. Each product is repeated inside one compiled loop (its input changing with
  the last result, so it cannot be hoisted out), so that a small product is timed without a host dispatch per
  product, as inside the step."""
  from jax import lax
  rng = np.random.default_rng(0)
  timed = {}
  for lhs, rhs, dims in dict.fromkeys(matmuls):
    a, b = _random(rng, lhs), _random(rng, rhs)
    out_shape = jax.eval_shape(lambda x, y, d=dims: lax.dot_general(x, y, d), a, b).shape
    (contract, _), _ = dims
    flops = 2.0 * np.prod(out_shape) * np.prod([lhs[i] for i in contract])
    reps = int(max(1, min(10_000, 2e7 / flops)))  # about 20 MFLOP (a few ms) per call

    def loop(x, y, d=dims, n=reps):
      def body(_, carry):
        x, total = carry
        out = lax.dot_general(x, y, d)
        return x + 0.0 * out.reshape(-1)[0], total + out.reshape(-1)[0]
      return lax.fori_loop(0, n, body, (x, jax.numpy.zeros((), x.dtype)))[1]

    fn = jax.jit(loop)
    fn(a, b).block_until_ready()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
      fn(a, b).block_until_ready()
      calls += 1
    timed[lhs, rhs, dims] = (flops, (time.perf_counter() - start) / (calls * reps))
  return timed


def matmul_ceiling(matmuls: list[tuple], seconds: float = 0.2, timed: dict | None = None) -> tuple[float, float]:
  """(FLOPs, FLOP/s) of `matmuls` (step_matmuls, repeats included) run one after another, each at its rate alone
  (`timed`, from time_matmuls; measured here when not given): the rate the step would reach if its matrix
  products were all it did, at their own shapes."""
  timed = time_matmuls(matmuls, seconds) if timed is None else timed
  total_flops = sum(timed[m][0] for m in matmuls)
  return total_flops, total_flops / sum(timed[m][1] for m in matmuls)


def keras_splits(splits) -> list[tuple]:
  """cnn_val's train, validation and test splits (numpy arrays, as sources.load_splits reads them) as Keras takes
  them: (float images in [0, 1], int labels) each."""
  return [(split["image"].astype(np.float32) / 255.0, np.asarray(split["label"]))
          for split in (splits.train, splits.validation, splits.test)]


def _random(rng, shape):
  import jax.numpy as jnp
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def matmul_peak_flops(n: int = 0, dtype="float32", seconds: float = 1.0, precision=None) -> float:
  """The machine's measured matmul FLOP/s: an n x n x n product in `dtype` on the default device, timed over
  about `seconds` after a warm-up (the ceiling that a throughput's share of peak is read against). n = 0:
  2048 on a CPU, 8192 on an accelerator (a smaller product does not fill a GPU). `precision`: jax.lax's
  (None: JAX's default, which on an NVIDIA GPU lets a float32 product run in TF32; 'highest': true float32)."""
  import jax.numpy as jnp
  n = n or (2048 if jax.devices()[0].platform == "cpu" else 8192)
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision))
  matmul(a, a).block_until_ready()
  start, reps = time.perf_counter(), 0
  while time.perf_counter() - start < seconds:
    out = matmul(a, a)
    reps += 1
  out.block_until_ready()
  return 2.0 * n ** 3 * reps / (time.perf_counter() - start)

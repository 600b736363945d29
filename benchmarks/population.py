"""Population training, measured: P models that differ only in their seed, trained at once by mapping the fused
train chunk over a leading member axis (`jax.vmap`), against P runs one after another.

    .venv/bin/python -m benchmarks.population [--model=SeedCNNDropout] [--batch_size=32]
        [--members=1,2,4,8] [--per_call=50] [--rounds=3] [--seconds=2]

Each member is the train step `train_and_evaluate` runs (`steps.train_chunk` over `steps.train_step`, on a
split held on the device, K steps per call), with its own initial weights, dropout keys and epoch order (seed
i). The P=1 case is one ordinary run's fused path; P sequential runs cost P times its time, so "vs P
sequential runs" is (images/s of all members) / (images/s of P=1). Before measuring, member 1 of the largest
population is checked against the same seed trained alone for one chunk (largest absolute difference of the
weights printed: 6e-8 on CPU; on a GPU, whose default float32 precision lets convolutions use TF32, 1.3e-2
after 50 steps, and 1.4e-5 with JAX_DEFAULT_MATMUL_PRECISION=highest). FLOPs per image from XLA's cost analysis, the share of the
machine's float32 matmul peak measured in the same run.

This measures the step only; the trainer does not yet run populations (each member would still need its own
run directory, evaluation and checkpoints).
"""

import functools
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from cnn_val import models, optim, steps
from cnn_val.data import pipeline

flags.DEFINE_string("model", "SeedCNNDropout", "Model (config) to measure: " + ", ".join(common.MODEL_CONFIGS))
flags.DEFINE_integer("batch_size", 32, "Batch size of every member.")
flags.DEFINE_string("members", "1,2,4,8", "Population sizes P.")
flags.DEFINE_integer("per_call", 50, "Train steps per call (fused chunk).")
flags.DEFINE_integer("examples", 51_200, "Size of the synthetic training split.")
flags.DEFINE_integer("rounds", 3, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
FLAGS = flags.FLAGS


def _bound_step(config):
  """`train_step` bound as `train_and_evaluate` binds it, for plain `jit` (no pmap axis)."""
  config = steps.chunk_config(config, jax.devices()[0].platform)  # as steps.pmapped_train_chunk does
  tx = optim.create_optimizer(config.optim, 100, 1)
  model = models.create_model(config.model, 10, axis_name=None, dtype=config.dtype)
  step = functools.partial(steps.train_step, model=model, tx=tx, axis_name=None,
                           micro_batch_size=0, signals=config.get("signals", True))
  return model, tx, step


def population_runner(config, members: int, arrays: dict, batch_size: int, per_call: int):
  """`(run(num_steps), first_states)`: P = `members` seeds trained together, `per_call` steps per call."""
  model, tx, step = _bound_step(config)
  chunk = functools.partial(steps.train_chunk, step_fn=step)
  states = [steps.create_train_state(model, tx, jax.random.key(seed), (28, 28, 1)) for seed in range(members)]
  state = jax.tree.map(lambda *x: jnp.stack(x), *states)
  keys = jnp.stack([jax.random.key(1000 + seed) for seed in range(members)])
  images, labels = jax.device_put(arrays["image"]), jax.device_put(arrays["label"])
  fn = jax.jit(jax.vmap(chunk, in_axes=(0, None, None, 0, 0)))
  orders = {}

  def indices(epoch):
    if epoch not in orders:
      orders.clear()
      orders[epoch] = jnp.asarray(np.stack([pipeline.train_indices(
          arrays["label"], global_batch=batch_size, num_devices=1, seed=seed, epoch=epoch)[:, 0]
          for seed in range(members)]))  # [P, steps, batch]
    return orders[epoch]

  holder, position = [state], [1, 0]

  def run(num_steps):
    s, done, metrics = holder[0], 0, None
    while done < num_steps:
      epoch, start = position
      idx = indices(epoch)
      if start + per_call > idx.shape[1]:
        position[:] = [epoch + 1, 0]
        continue
      s, metrics = fn(s, images, labels, idx[:, start:start + per_call], keys)
      position[1] += per_call
      done += per_call
    jax.block_until_ready(metrics)
    holder[0] = s
    return done

  return run, holder


def _check_member(config, arrays, batch_size, per_call, members):
  """The largest |difference| of the weights between member 1 of a population and seed 1 trained alone (the
  plain jitted chunk, no member axis) over the same `per_call` steps."""
  run, holder = population_runner(config, members, arrays, batch_size, per_call)
  run(per_call)
  model, tx, step = _bound_step(config)
  state = steps.create_train_state(model, tx, jax.random.key(1), (28, 28, 1))
  idx = pipeline.train_indices(arrays["label"], global_batch=batch_size, num_devices=1, seed=1, epoch=1)[:, 0]
  alone, _ = jax.jit(functools.partial(steps.train_chunk, step_fn=step))(
      state, jnp.asarray(arrays["image"]), jnp.asarray(arrays["label"]), jnp.asarray(idx[:per_call]),
      jax.random.key(1001))
  diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a[1] - b))), holder[0].params, alone.params)
  return max(jax.tree.leaves(diffs))


def main(argv):
  del argv
  config = common.MODEL_CONFIGS[FLAGS.model]()
  images, labels = common.synthetic_batches(1, num_batches=FLAGS.examples)
  arrays = {"image": images, "label": labels}
  sizes = [int(p) for p in FLAGS.members.split(",")]
  b, k = FLAGS.batch_size, FLAGS.per_call
  if k > FLAGS.examples // b:
    raise app.UsageError(f"--per_call={k} is more than an epoch's {FLAGS.examples // b} steps "
                         f"(--examples={FLAGS.examples} at --batch_size={b}); lower it or raise --examples.")
  if max(sizes) >= 2:
    print(f"member 1 of P={max(sizes)} vs seed 1 trained alone, after {k} steps: largest weight difference "
          f"{_check_member(config, arrays, b, k, max(sizes)):.2e}", flush=True)
  peak_before = common.matmul_peak_flops()
  flops = common.flops_per_image(config, b)
  runners = [population_runner(config, p, arrays, b, k)[0] for p in sizes]
  num_steps = []
  for p, run in zip(sizes, runners):
    run(k)  # compile
    start = time.perf_counter()
    done = run(2 * k)
    num_steps.append(max(k, int(FLAGS.seconds / ((time.perf_counter() - start) / done))))
    print(f"P={p} compiled: {done * b * p / (time.perf_counter() - start):.0f} img/s", file=sys.stderr, flush=True)
  rates = [[] for _ in sizes]
  for r in range(FLAGS.rounds):
    for i, (p, run) in enumerate(zip(sizes, runners)):
      start = time.perf_counter()
      done = run(num_steps[i])
      rates[i].append(done * b * p / (time.perf_counter() - start))
    print(f"round {r + 1}: " + " ".join(f"{x[-1]:.0f}" for x in rates), file=sys.stderr, flush=True)
  rates = [float(np.median(r)) for r in rates]
  peak = (peak_before + common.matmul_peak_flops()) / 2
  device = jax.devices()[0]
  bf16 = "" if device.platform == "cpu" else (
      f", bfloat16 {common.matmul_peak_flops(dtype='bfloat16') / 1e9:,.0f} GFLOP/s (the table uses float32's)")
  print(f"\nJAX {jax.__version__}, {device.platform} ({device.device_kind}), 1 device; {FLAGS.model}, batch {b} "
        f"per member, {k} steps per call; {flops / 1e6:.2f} MFLOP/image; float32 matmul peak "
        f"{peak / 1e9:,.0f} GFLOP/s{bf16}; median of {FLAGS.rounds} rounds\n")
  print("| members P | images/s (all members) | images/s per member | vs P sequential runs | GFLOP/s | share of peak |")
  print("| --- | --- | --- | --- | --- | --- |")
  base = rates[sizes.index(1)] if 1 in sizes else None
  for p, rate in zip(sizes, rates):
    vs = f"{rate / base:.2f}x" if base else "-"
    print(f"| {p} | {rate:,.0f} | {rate / p:,.0f} | {vs} | {rate * flops / 1e9:,.0f} | {rate * flops / peak:.1%} |")


if __name__ == "__main__":
  app.run(main)

"""Shared pieces of the benchmarks: cnn_val's own pmapped train step on synthetic batches, and alternating
measurement (every case once per round, median over rounds) so that ratios in one table share the machine's
state."""

import time

import jax
import numpy as np

from cnn_val import models, optim, steps
from configs import default, fashion_mnist_bn, seed_ex1

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


def measure(cases, rounds: int, seconds: float) -> list[float]:
  """Median images/s of each `(run, batch_size)` case, measured alternately over `rounds` rounds."""
  num_steps = []
  for run, batch_size in cases:
    run(3)  # compile and warm up
    start = time.perf_counter()
    run(3)
    num_steps.append(max(3, int(seconds / ((time.perf_counter() - start) / 3))))
  rates = [[] for _ in cases]
  for _ in range(rounds):
    for i, (run, batch_size) in enumerate(cases):
      start = time.perf_counter()
      run(num_steps[i])
      rates[i].append(num_steps[i] * batch_size / (time.perf_counter() - start))
  return [float(np.median(r)) for r in rates]


def print_ratio_table(cases, rates, *, what: str, ratio_to: str) -> None:
  """One line per `(model, batch, label, _)` case: images/s and the ratio to its group's first case."""
  width = max(len(label) for _, _, label, _ in cases)
  print(f"{'model':16s} {'batch':>5s}  {what:{width}s} {'img/s':>8s} {'vs ' + ratio_to:>12s}")
  base = {}
  for (name, batch_size, label, _), rate in zip(cases, rates):
    base.setdefault((name, batch_size), rate)
    print(f"{name:16s} {batch_size:5d}  {label:{width}s} {rate:8.0f} {rate / base[(name, batch_size)]:11.2f}x")

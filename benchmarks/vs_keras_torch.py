"""Train throughput of the seed CNNs: cnn_val's pmapped train step against Keras and PyTorch, in one run.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m benchmarks.vs_keras_torch [--batch_sizes=32,256] [--rounds=5]

Same model, batch size, optimizer (Adam) and loss in each framework, on the same synthetic uint8 batches
scaled to [0, 1]: Keras `model.fit` on TensorFlow's default CPU path (oneDNN, no XLA: the seed's own
framework), PyTorch eager, and cnn_val's train step as `train_and_evaluate` builds it (fast CPU ops, auto
micro-batching) on the devices JAX has (1 on a CPU host unless XLA_FLAGS asks for more). Each round
measures every case once, alternating; the table gives the median images/s over rounds and the ratio to
Keras.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common

flags.DEFINE_string("batch_sizes", "32,256", "Global batch sizes.")
flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
FLAGS = flags.FLAGS

MODELS = {name: common.MODEL_CONFIGS[name] for name in ("SeedCNN", "SeedCNNDropout")}


def keras_runner(model_name, batch_size):
  import keras
  from keras import layers
  images, labels = common.synthetic_batches(batch_size)
  x = images.astype(np.float32) / 255.0
  stack = [keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2)]
  if model_name == "SeedCNNDropout":
    stack += [layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
              layers.Dropout(0.5)]
  else:
    stack += [layers.Flatten()]
  model = keras.Sequential(stack + [layers.Dense(10)])
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

  def run(num_steps):
    # One fit call per measurement, as in real training: per-call overhead amortised over all its steps.
    reps = -(-num_steps // (len(labels) // batch_size))
    model.fit(np.tile(x, (reps, 1, 1, 1))[:num_steps * batch_size], np.tile(labels, reps)[:num_steps * batch_size],
              batch_size=batch_size, epochs=1, verbose=0, shuffle=False)

  return run


def torch_runner(model_name, batch_size):
  import torch
  from torch import nn
  torch.manual_seed(0)
  images, labels = common.synthetic_batches(batch_size)
  x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(labels.astype(np.int64))
  if model_name == "SeedCNNDropout":
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10))
  else:
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5408, 10))
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  loss_fn = nn.CrossEntropyLoss()
  model.train()

  def run(num_steps):
    for i in range(num_steps):
      j = (i % (len(y) // batch_size)) * batch_size
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(x[j:j + batch_size]), y[j:j + batch_size])
      loss.backward()
      opt.step()

  return run


def main(argv):
  del argv
  num_cpu_devices = len(jax.local_devices())
  cases = []
  for batch_size in (int(b) for b in FLAGS.batch_sizes.split(",")):
    for name in MODELS:
      cases.append((name, batch_size, "keras (TF default path)", keras_runner(name, batch_size)))
      cases.append((name, batch_size, "pytorch eager", torch_runner(name, batch_size)))
      for d in sorted({1, num_cpu_devices}):
        if batch_size % d == 0:
          runner = common.cnn_val_runner(MODELS[name](), batch_size, d)
          cases.append((name, batch_size, f"cnn_val, {d} device(s)", runner))
  flops = {(name, b): common.flops_per_image(MODELS[name](), b) for name, b, _, _ in cases}
  rates, peak = common.measure_with_peak([(run, b) for _, b, _, run in cases], FLAGS.rounds, FLAGS.seconds)

  import keras
  import tensorflow as tf
  import torch
  print(f"{os.cpu_count()} CPUs; JAX {jax.__version__}, TensorFlow {tf.__version__} + Keras {keras.__version__}, "
        f"PyTorch {torch.__version__}; median of {FLAGS.rounds} alternating rounds")
  print("FLOPs per image: cnn_val's step (XLA's cost analysis), the same model's arithmetic in every framework")
  common.print_ratio_table(cases, rates, what="framework", ratio_to="Keras",  # Keras is each group's first
                           flops=flops, peak=peak)


if __name__ == "__main__":
  app.run(main)

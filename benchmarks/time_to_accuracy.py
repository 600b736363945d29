"""Wall time of the seed's example-3 recipe to its Fashion-MNIST test accuracy: cnn_val against Keras.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/time_to_accuracy.py [--epochs=25] [--target=0.91]

Both train the same model (Conv32-pool-Conv64-pool-dropout 0.5-dense) on the same 54,000 training images
(TFDS `fashion_mnist`, prepared offline), batch 32, Adam with Keras' ExponentialDecay(1e-3, 5000, 0.7), for
the same number of epochs, evaluating validation after each epoch and test once at the end: Keras with
`model.fit` on TensorFlow's default CPU path, cnn_val with `train_and_evaluate(configs/default.py)` (its
defaults: fast CPU ops, automatic micro-batching, all devices JAX has). Prints each wall time (from the prepared
TFDS data to the final test evaluation: loading, building, training, per-epoch validation), test accuracy
and whether it reached the target.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile
import time

from absl import app
from absl import flags

from benchmarks import common
from cnn_val import rundir, train
from cnn_val.data import sources
from cnn_val.configs import default

flags.DEFINE_integer("epochs", 25, "Epochs for both frameworks.")
flags.DEFINE_float("target", 0.91, "Test accuracy to reach.")
flags.DEFINE_string("order", "keras,cnn_val", "Which runs, in which order.")
flags.DEFINE_integer("steps_per_call", 0, "cnn_val's config.steps_per_call (0 = auto, 1 = the per-step loop).")
FLAGS = flags.FLAGS


def run_keras(config):
  import keras
  from keras import layers
  start = time.perf_counter()  # from the prepared TFDS data, as train_and_evaluate starts
  splits = sources.load_splits(config.data)  # the same split as cnn_val: last 10% of train held out
  (x, y), (xv, yv), (xt, yt) = common.keras_splits(splits)
  keras.utils.set_random_seed(config.seed)
  model = keras.Sequential([
      keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
      layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.5),
      layers.Dense(10, activation="softmax")])
  schedule = keras.optimizers.schedules.ExponentialDecay(
      config.optim.learning_rate, config.optim.decay_steps, config.optim.decay_rate)
  model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
  model.fit(x, y, batch_size=config.batch_size, epochs=config.num_epochs, validation_data=(xv, yv), verbose=2)
  _, test_accuracy = model.evaluate(xt, yt, verbose=0)
  return time.perf_counter() - start, test_accuracy


def run_cnn_val(config):
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    row = train.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
    timing = rundir.read_json(workdir, rundir.TIMING_FILE)
  print("cnn_val wall time by phase (timing.json):")
  for phase, spent in list(timing["phases"].items()) + [("other", timing["other_seconds"])]:
    print(f"| {phase} | {spent:.1f} s | {spent / timing['total_seconds']:.1%} |")
  return seconds, row["test_accuracy"]


def main(argv):
  del argv
  config = default.get_config()
  config.num_epochs = FLAGS.epochs
  config.steps_per_call = FLAGS.steps_per_call
  results = {}
  for name in FLAGS.order.split(","):
    results[name] = {"keras": run_keras, "cnn_val": run_cnn_val}[name](config)
  print(f"seed example 3 on Fashion-MNIST, {FLAGS.epochs} epochs, batch {config.batch_size}, "
        f"{os.cpu_count()} CPUs")
  for name, (seconds, accuracy) in results.items():
    print(f"{name:8s} wall {seconds:7.1f} s  test accuracy {accuracy:.4f}  "
          f"reached {FLAGS.target:.2%}: {'yes' if accuracy >= FLAGS.target else 'no'}")
  if len(results) == 2:
    print(f"cnn_val / keras wall time: {results['cnn_val'][0] / results['keras'][0]:.2f}x")


if __name__ == "__main__":
  app.run(main)

"""The seed's three Keras examples against cnn_val's seed configs: test accuracy over seeds, side by side.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m benchmarks.seed_parity [--examples=1,2,3] [--seeds=3] [--first_seed=0] [--epochs=10]
        [--max_train_examples=0]

Each example as the article (../shared/seed/) writes it, in Keras: the model, Adam (Keras' defaults; example 1
with `ExponentialDecay(1e-3, 10000, 0.96, staircase=True)`), categorical cross-entropy on one-hot labels,
example 2's `ImageDataGenerator(...).flow(x, y, batch_size=32)`, batch 32, `fit` with validation after each
epoch, `keras.utils.set_random_seed(seed)`; and in cnn_val, `train_and_evaluate(configs/seed_exN.py)` with
`config.seed = seed`. Both on the same split (TFDS `fashion_mnist` prepared offline; the last 10% of train
held out for validation), pixels scaled to [0, 1] (the article leaves the scaling to the reader; both scale).
Keras runs the last partial batch of an epoch, cnn_val drops it (1,687 of 1,687.5 batches).

Prints one line per run as it finishes, then per example: test accuracy mean ± std over the seeds for each
framework, the difference with a 95% CI (Welch's t from scipy: the seeds are independent draws on each side,
not paired) and whether it lies within the seeds' spread (|difference| <= the larger std).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from scipy import stats

from benchmarks import common
from cnn_val import train
from cnn_val.configs import seed_ex1, seed_ex2, seed_ex3
from cnn_val.data import sources

_EXAMPLES = flags.DEFINE_list("examples", ["1", "2", "3"], "Which of the seed's examples.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds first_seed..first_seed+N-1 for each framework.")
_FIRST_SEED = flags.DEFINE_integer("first_seed", 0, "The first seed (to add seeds to an earlier run).")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Epochs (the article's 10).")
_MAX_TRAIN = flags.DEFINE_integer("max_train_examples", 0, "Fewer training examples (a quick check); 0 = all.")
_ORDER = flags.DEFINE_list("frameworks", ["keras", "cnn_val"], "Which frameworks, in which order.")

CONFIGS = {"1": seed_ex1, "2": seed_ex2, "3": seed_ex3}


def config_for(example: str, seed: int):
  config = CONFIGS[example].get_config()
  config.seed = seed
  config.num_epochs = _EPOCHS.value
  config.data.max_train_examples = _MAX_TRAIN.value
  config.doctor = False  # neither changes what trains; they cost time
  config.preflight = False
  return config


def keras_model(example: str):
  import keras  # pylint: disable=import-outside-toplevel
  from keras import layers  # pylint: disable=import-outside-toplevel
  body = [layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2))]
  if example == "3":
    body += [layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)), layers.Flatten(),
             layers.Dropout(0.5)]
  else:
    body += [layers.Flatten()]
  return keras.Sequential([keras.Input((28, 28, 1)), *body, layers.Dense(10, activation="softmax")])


def run_keras(example: str, seed: int) -> float:
  import keras  # pylint: disable=import-outside-toplevel
  config = config_for(example, seed)
  splits = sources.load_splits(config.data)  # cnn_val's split: the same examples in the same order
  (x, y), (xv, yv), (xt, yt) = common.keras_splits(splits)
  if _MAX_TRAIN.value:
    x, y = x[:_MAX_TRAIN.value], y[:_MAX_TRAIN.value]
  y, yv, yt = (keras.utils.to_categorical(v, 10) for v in (y, yv, yt))
  keras.utils.set_random_seed(seed)
  model = keras_model(example)
  if example == "1":
    optimizer = keras.optimizers.Adam(learning_rate=keras.optimizers.schedules.ExponentialDecay(
        0.001, decay_steps=10000, decay_rate=0.96, staircase=True))
  else:
    optimizer = "adam"
  model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
  if example == "2":
    from keras.src.legacy.preprocessing.image import ImageDataGenerator  # pylint: disable=import-outside-toplevel
    datagen = ImageDataGenerator(rotation_range=20, width_shift_range=0.2, height_shift_range=0.2,
                                 shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")
    datagen.fit(x)
    model.fit(datagen.flow(x, y, batch_size=32), validation_data=(xv, yv), epochs=config.num_epochs, verbose=0)
  else:
    model.fit(x, y, validation_data=(xv, yv), epochs=config.num_epochs, batch_size=32, verbose=0)
  return float(model.evaluate(xt, yt, verbose=0)[1])


def run_cnn_val(example: str, seed: int) -> float:
  with tempfile.TemporaryDirectory() as workdir:
    return float(train.train_and_evaluate(config_for(example, seed), workdir)["test_accuracy"])


def compare(keras_acc, cnn_acc) -> dict:
  """Welch's difference of means (cnn_val - Keras) with its 95% CI, and whether it is within the spread."""
  a, b = np.asarray(cnn_acc), np.asarray(keras_acc)
  diff = a.mean() - b.mean()
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else np.inf
  half = stats.t.ppf(0.975, dof) * np.sqrt(va + vb) if va + vb > 0 else 0.0
  p = stats.ttest_ind(a, b, equal_var=False).pvalue if va + vb > 0 else float("nan")
  return {"diff": diff, "low": diff - half, "high": diff + half, "p": p,
          "within_spread": abs(diff) <= max(a.std(ddof=1), b.std(ddof=1))}


def main(argv):
  del argv
  runners = {"keras": run_keras, "cnn_val": run_cnn_val}
  results = {e: {f: [] for f in _ORDER.value} for e in _EXAMPLES.value}
  start = time.perf_counter()
  for example in _EXAMPLES.value:
    for seed in range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value):
      for framework in _ORDER.value:
        t0 = time.perf_counter()
        accuracy = runners[framework](example, seed)
        results[example][framework].append(accuracy)
        print(f"example {example} seed {seed} {framework:8s} test accuracy {accuracy:.4f} "
              f"({time.perf_counter() - t0:.0f} s; {time.perf_counter() - start:.0f} s so far)", flush=True)
  print(f"\nThe seed's examples, {_EPOCHS.value} epochs, {_SEEDS.value} seeds, "
        f"{_MAX_TRAIN.value or 'all'} training examples, {os.cpu_count()} CPUs:\n")
  print("| example | Keras test accuracy | cnn_val test accuracy | cnn_val - Keras, 95% CI (points) | p | "
        "within the seeds' spread |\n| --- | --- | --- | --- | --- | --- |")
  for example, by in results.items():
    if {"keras", "cnn_val"} <= set(by):
      k, c = np.asarray(by["keras"]), np.asarray(by["cnn_val"])
      r = compare(k, c)
      print(f"| {example} | {100 * k.mean():.2f} ± {100 * k.std(ddof=1):.2f} | "
            f"{100 * c.mean():.2f} ± {100 * c.std(ddof=1):.2f} | {100 * r['diff']:+.2f} "
            f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}] | {r['p']:.2f} | "
            f"{'yes' if r['within_spread'] else 'no'} |")


if __name__ == "__main__":
  app.run(main)

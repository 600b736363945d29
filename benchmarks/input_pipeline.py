"""The input pipeline's share of a training step: tf.data batches alone against the train step alone.

    .venv/bin/python -m benchmarks.input_pipeline [--config=configs/default.py] [--batches=400]

Reads `--batches` training batches of the config's dataset through `pipeline.train_batches` (a seeded
permutation of the in-memory split, gathered into per-device batches, starting a fresh epoch each round as
a run does) with nothing consuming them, then times the config's train step on the same number of
batches; both measured alternately. The share printed is the pipeline's time relative to the step's.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import itertools
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common
from cnn_val import parallel
from cnn_val.data import pipeline, sources
from cnn_val.configs import default

flags.DEFINE_integer("batches", 400, "Batches per measurement.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median is reported.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = default.get_config()
  num_devices = len(parallel.select_devices(config.num_devices))
  splits = sources.load_splits(config.data)
  arrays = pipeline.to_arrays(splits.train, splits.num_classes, "train")  # once per run, as train.py does

  def read(epoch):
    batches = pipeline.train_batches(arrays, global_batch=config.batch_size, num_devices=num_devices,
                                     seed=0, epoch=epoch)
    for _ in itertools.islice(batches, FLAGS.batches):
      pass

  step = common.cnn_val_runner(config, config.batch_size, num_devices)
  step(5)
  times = {"pipeline": [], "step": []}
  for r in range(FLAGS.rounds):
    start = time.perf_counter()
    read(r)
    times["pipeline"].append(time.perf_counter() - start)
    start = time.perf_counter()
    step(FLAGS.batches)
    times["step"].append(time.perf_counter() - start)
  pipe, train = (float(np.median(times[k])) / FLAGS.batches * 1e3 for k in ("pipeline", "step"))
  print(f"{config.data.name}, global batch {config.batch_size}, {num_devices} device(s), JAX {jax.__version__}")
  print(f"input pipeline {pipe:.3f} ms/batch, train step {train:.3f} ms/batch, pipeline/step {pipe / train:.1%}")


if __name__ == "__main__":
  app.run(main)

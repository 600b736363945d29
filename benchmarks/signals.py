"""The doctor's training-signal overhead, in one run: the train step with `config.signals` on and off.

    .venv/bin/python -m benchmarks.signals [--batch_sizes=32,256] [--rounds=5]

Per-class recall, precision and the confusion matrix come from the eval step's confusion matrix, which
evaluation computes anyway; the gradient norm is the step's NaN guard. What the signals add to a training
step is the update/parameter ratio (two global norms); this measures its cost on the default config.

It also measures the training probe (`config.train_eval_examples`: that many training examples evaluated like
validation at each evaluation) as a share of an epoch: the eval step's throughput at `eval_batch_size`
against the train step's at the default batch, scaled by the probe's and the epoch's example counts.
"""

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common
from cnn_val import models, optim, steps
from cnn_val.configs import default

flags.DEFINE_string("batch_sizes", "32,256", "Global batch sizes.")
flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
flags.DEFINE_integer("epoch_examples", 54_000, "Training examples per epoch (Fashion-MNIST's after validation).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  print(f"{jax.device_count()} {jax.default_backend()} device(s); SeedCNNDropout (configs/default.py)\n")
  cases, labels = [], []
  for batch_size in (int(b) for b in FLAGS.batch_sizes.split(",")):
    for signals in (False, True):
      config = default.get_config()
      config.signals = signals
      cases.append((common.cnn_val_runner(config, batch_size, 1), batch_size))
      labels.append(("SeedCNNDropout", batch_size, "signals on" if signals else "signals off", None))
  config = default.get_config()
  cases.append((_eval_runner(config), config.eval_batch_size))
  labels.append(("SeedCNNDropout", config.eval_batch_size, "eval step", None))
  flops = {("SeedCNNDropout", b): common.flops_per_image(default.get_config(), b) for _, b, _, _ in labels[:-1]}
  rates, peak = common.measure_with_peak(cases, FLAGS.rounds, FLAGS.seconds)
  common.print_ratio_table(labels[:-1], rates[:-1], what="train step", ratio_to="off", flops=flops, peak=peak)
  for i in range(0, len(rates) - 1, 2):
    print(f"batch {labels[i][1]}: step time with signals / without = {rates[i] / rates[i + 1]:.3f}x")
  train_rate = next((r for label, r in zip(labels, rates) if label[1:3] == (config.batch_size, "signals on")),
                    rates[1])  # the default batch with signals on (else the first batch size measured)
  probe_s = config.train_eval_examples / rates[-1]
  epoch_s = FLAGS.epoch_examples / train_rate
  print(f"training probe: {config.train_eval_examples} examples at {rates[-1]:.0f} images/s (eval step, batch "
        f"{config.eval_batch_size}) = {probe_s:.2f} s per evaluation, against {epoch_s:.1f} s for an epoch of "
        f"{FLAGS.epoch_examples} examples at {train_rate:.0f} images/s: {100 * probe_s / epoch_s:.1f}% of an epoch")


def _eval_runner(config):
  """`run(num_steps)` for the eval step as `train_and_evaluate` builds it, on one device."""
  tx = optim.create_optimizer(config.optim, 100, 1)
  state = steps.create_train_state(models.create_model(config.model, 10), tx, jax.random.key(0), (28, 28, 1))
  step = steps.pmapped_steps(config, 10, tx, jax.local_devices()[:1]).eval
  images, labels = common.synthetic_batches(config.eval_batch_size)
  batch = {"image": images[:config.eval_batch_size].reshape((1, -1, 28, 28, 1)),
           "label": labels[:config.eval_batch_size].reshape(1, -1),
           "mask": np.ones((1, config.eval_batch_size), bool)}

  def run(num_steps):
    for _ in range(num_steps):
      out = step(state, batch)
    jax.block_until_ready(out)

  return run


if __name__ == "__main__":
  app.run(main)

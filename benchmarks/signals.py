"""The doctor's training-signal overhead, in one run: the train step with `config.signals` on and off.

    .venv/bin/python -m benchmarks.signals [--batch_sizes=32,256] [--rounds=5]

Per-class recall, precision and the confusion matrix come from the eval step's confusion matrix, which
evaluation computes anyway; the gradient norm is the step's NaN guard. What the signals add to a training
step is the update/parameter ratio (two global norms); this measures its cost on the default config.
"""

from absl import app
from absl import flags
import jax

from benchmarks import common
from configs import default

flags.DEFINE_string("batch_sizes", "32,256", "Global batch sizes.")
flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
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
  rates = common.measure(cases, FLAGS.rounds, FLAGS.seconds)
  common.print_ratio_table(labels, rates, what="train step", ratio_to="off")
  for i in range(0, len(rates), 2):
    print(f"batch {labels[i][1]}: step time with signals / without = {rates[i] / rates[i + 1]:.3f}x")


if __name__ == "__main__":
  app.run(main)

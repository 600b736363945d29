"""Several host CPU devices against one, in one run: cnn_val's pmapped train step on 1..N forced devices.

    .venv/bin/python -m benchmarks.host_devices [--devices=1,2] [--batch_sizes=32,256] [--rounds=5]

The process forces max(--devices) host devices (`jax_num_cpu_devices`, as `cnn_val.main` does for
`config.cpu_devices`); every variant uses the first k of them with the same global batch, so the same work
is split k ways. "1 device, wait each step" is the single device with the per-step wait that
`parallel.pmap_step` imposes on several CPU devices: it prices that wait alone. `auto` in
`parallel.auto_cpu_devices` is set from this table.
"""

import os

from absl import app
from absl import flags
import jax

from benchmarks import common

flags.DEFINE_string("devices", "1,2", "Host device counts to compare (the first is the baseline).")
flags.DEFINE_string("batch_sizes", "32,256", "Global batch sizes.")
flags.DEFINE_string("models", "SeedCNN,SeedCNNDropout,ConvNet-BN", "Models (configs) to measure.")
flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  counts = [int(d) for d in FLAGS.devices.split(",")]
  jax.config.update("jax_num_cpu_devices", max(counts))  # before any JAX operation
  print(f"{jax.device_count()} host CPU devices forced on {os.cpu_count()} CPUs, JAX {jax.__version__}; "
        f"median of {FLAGS.rounds} alternating rounds\n")
  cases = []
  for batch_size in (int(b) for b in FLAGS.batch_sizes.split(",")):
    for name in FLAGS.models.split(","):
      make_config = common.MODEL_CONFIGS[name]
      for k in counts:
        if batch_size % k:
          continue
        label = f"{k} device{'s' if k > 1 else ''}"
        cases.append((name, batch_size, label, common.cnn_val_runner(make_config(), batch_size, k)))
        if k == 1:
          cases.append((name, batch_size, "1 device, wait each step",
                        common.cnn_val_runner(make_config(), batch_size, 1, wait_each_step=True)))
  flops = {(name, b): common.flops_per_image(common.MODEL_CONFIGS[name](), b) for name, b, _, _ in cases}
  rates, peak = common.measure_with_peak([(run, b) for _, b, _, run in cases], FLAGS.rounds, FLAGS.seconds)
  common.print_ratio_table(cases, rates, what="host devices", ratio_to="1 device", flops=flops, peak=peak)


if __name__ == "__main__":
  app.run(main)

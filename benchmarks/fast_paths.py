"""What each CPU speed-up buys: cnn_val's train step with XLA's own ops against each fast path, in one run.

    .venv/bin/python -m benchmarks.fast_paths [--batch_sizes=32,256] [--rounds=3]

Per model and global batch, the variants are measured alternately and reported as images/s and as a ratio
to the plain-XLA baseline (XLA convolution and max-pool, whole batch, 1 device, float32): every convolution
as a matmul + reshape max-pool; the `auto` choice (matmul per layer where it wins); + automatic
micro-batching; + bfloat16; + all host CPU devices (only when XLA_FLAGS provides several).

A second table does the same for the eval step (a forward pass in eval mode, as validation, test, the training
probe and the doctor's predictions run it) at `--eval_batch_size`: the whole device batch at once against
micro-batches (`parallel.eval_micro_batch_size`, the default on CPU, and a few other sizes).

Each table also gives GFLOP/s and the share of the machine's float32 matmul peak (a 2048^3 product measured
before and after it in the same run): FLOPs per image from XLA's cost analysis of the model's unsplit step
(the variants do the same arithmetic; the bfloat16 row is read against the float32 peak too).
"""

import os

from absl import app
from absl import flags
import jax

from benchmarks import common
from cnn_val import parallel

flags.DEFINE_string("batch_sizes", "32,256", "Global batch sizes.")
flags.DEFINE_integer("rounds", 3, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
flags.DEFINE_integer("eval_batch_size", 500, "Eval batch of the second table (configs' default); 0 = no eval table.")
flags.DEFINE_bool("train", True, "The train step's table (false: only the eval table).")
FLAGS = flags.FLAGS


def _variants(make_config, batch_size):
  all_devices = len(jax.local_devices())

  def config(conv, pool, micro, dtype="float32"):
    c = make_config()
    c.model.conv_impl, c.model.pool_impl, c.micro_batch_size, c.dtype = conv, pool, micro, dtype
    return c

  whole = batch_size  # micro_batch_size >= the device batch: no split
  yield "xla ops, 1 device", config("xla", "xla", whole), 1
  yield "matmul conv + reshape pool", config("matmul", "reshape", whole), 1
  yield "auto ops (the default)", config("auto", "auto", whole), 1
  yield "auto ops + micro-batch auto", config("auto", "auto", 0), 1
  yield "auto ops + micro-batch, bf16", config("auto", "auto", 0, "bfloat16"), 1
  if all_devices > 1 and batch_size % all_devices == 0:
    yield f"auto ops + micro, {all_devices} devices", config("auto", "auto", 0), all_devices


def _eval_variants(batch_size):
  auto = parallel.eval_micro_batch_size(batch_size)
  yield "whole batch", batch_size
  yield f"micro-batches of {auto} (auto, the default)", auto
  for micro in (250, 50):
    if micro != auto and micro < batch_size and batch_size % micro == 0:
      yield f"micro-batches of {micro}", micro


def main(argv):
  del argv
  print(f"{jax.default_backend()} backend, {os.cpu_count()} CPUs, JAX {jax.__version__}; "
        f"median of {FLAGS.rounds} alternating rounds")
  if FLAGS.train:
    cases, flops = [], {}
    for batch_size in (int(b) for b in FLAGS.batch_sizes.split(",")):
      for name, make_config in common.MODEL_CONFIGS.items():
        flops[name, batch_size] = common.flops_per_image(make_config(), batch_size)
        for label, config, devices in _variants(make_config, batch_size):
          cases.append((name, batch_size, label, common.cnn_val_runner(config, batch_size, devices)))
    _table(cases, flops, what="variant", ratio_to="xla ops")
  if FLAGS.eval_batch_size:
    batch_size = FLAGS.eval_batch_size
    cases = [(name, batch_size, label, common.cnn_val_eval_runner(make_config(), batch_size, micro))
             for name, make_config in common.MODEL_CONFIGS.items() for label, micro in _eval_variants(batch_size)]
    flops = {(name, batch_size): common.flops_per_image(make_config(), batch_size, evaluation=True)
             for name, make_config in common.MODEL_CONFIGS.items()}
    print("\neval step (eval mode, 1 device)")
    _table(cases, flops, what="eval variant", ratio_to="whole batch")


def _table(cases, flops, **kw):
  rates, peak = common.measure_with_peak([(run, b) for _, b, _, run in cases], FLAGS.rounds, FLAGS.seconds)
  print("MFLOP/image: " + ", ".join(f"{name} {b}: {f / 1e6:.2f}" for (name, b), f in flops.items()))
  common.print_ratio_table(cases, rates, flops=flops, peak=peak, **kw)


if __name__ == "__main__":
  app.run(main)

"""Fused train steps on a device-resident split against the per-step loop over host batches, in one run, with
each model's FLOPs per image and its share of the machine's measured float32 matmul peak.

    .venv/bin/python -m benchmarks.fused_steps [--models=SeedCNN,SeedCNNDropout,ConvNet-BN]
        [--batch_sizes=32,128] [--per_call=10,50] [--rounds=5] [--seconds=2] [--per_matmul]
        [--kernel_grads=autodiff,stacked,...] [--profile_ops]

Both paths are the ones `train_and_evaluate` runs (`train_loop.step_calls`: a numpy gather of each batch from a
51,200-image split by the epoch's permutation, then one pmapped step; `train_loop.chunk_calls`: the split held on
the device, K steps per call under `lax.scan`), on 1 device, measured alternately round by round (median).
FLOPs per image come from XLA's cost analysis of the unsplit step; the peak is a 2048^3 float32 matmul
measured in the same run, before and after the table (both printed; the share uses their mean). A second
table times the step's own matrix products alone, at their shapes (read from the lowered step:
`common.step_matmuls`, `common.matmul_ceiling`): what the step's arithmetic could reach on this machine if
nothing else cost time, and the share of the fastest fused step's time those products would take alone. With
--per_matmul a third table times each distinct product alone, with how often the step runs it: which of them
hold the step's arithmetic below the peak. With --kernel_grads=FORM,... each fused case runs again for each
form of the convolutions' kernel gradient, compiled (before the rounds) in that form (`common.kernel_grad_form`:
`autodiff`, `stacked` or `stackedN`, `transposed`, or both joined by `+`, fast_ops' defaults being
`stacked+transposed`): what each form gains or loses inside the step, with the median of each round's ratio
to the default fused case (paired rounds: this VM's speed drifts by 5-20% within a run). With --profile_ops the
fastest fused case of each model runs once more under `jax.profiler`, and a last table gives the time per image
of each XLA operation of the compiled step (its thunks, as the CPU runtime reports them) with what it computes:
where the step's time goes between and in its products.
"""

import collections
import glob
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common
from cnn_val import models, optim, parallel, steps, train_loop
from cnn_val.data import pipeline

flags.DEFINE_string("models", "SeedCNN,SeedCNNDropout,ConvNet-BN", "Models (configs) to measure.")
flags.DEFINE_string("batch_sizes", "32,128", "Batch sizes.")
flags.DEFINE_string("per_call", "10,50", "Steps per fused call to compare with the per-step loop.")
flags.DEFINE_integer("examples", 51_200,
                     "Size of the synthetic training split (51,200: whole chunks at every batch and K).")
flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
flags.DEFINE_bool("per_matmul", False, "Also a table of each of the step's matrix products alone: its shapes, "
                  "its rate and its time per image (where the matmul ceiling is lost).")
flags.DEFINE_list("kernel_grads", [], "Also run each fused case compiled with each of these forms of the "
                  "convolutions' kernel gradient: autodiff, stacked (stackedN: up to N input channels), transposed, "
                  "or both joined by '+' (stacked+transposed: the defaults).")
flags.DEFINE_bool("profile_ops", False, "Also profile the fastest fused case of each model and batch size: the "
                  "time per image of each XLA operation of its step.")
flags.DEFINE_integer("profile_ops_rows", 25, "Rows of the --profile_ops table per case (the costliest operations).")
FLAGS = flags.FLAGS


def _runner(config, batch_size: int, per_call: int, arrays: dict):
  """`run(num_steps)` through train_loop.py's call generators: per_call=1 is the per-step loop."""
  config = config.copy_and_resolve_references()
  config.batch_size = batch_size
  devices = jax.local_devices()[:1]
  tx = optim.create_optimizer(config.optim, 100, 1)
  holder = [steps.create_train_state(models.create_model(config.model, 10), tx, jax.random.key(0), (28, 28, 1))]
  key = jax.random.key(1)
  if per_call == 1:
    p_train = steps.pmapped_steps(config, 10, tx, devices).train
  else:
    p_chunk = steps.pmapped_train_chunk(config, 10, tx, devices)
    data = parallel.replicate(arrays, devices)
  epoch = [0]

  def calls():
    while True:  # epochs of the split, as training draws them
      epoch[0] += 1
      if per_call == 1:
        yield from train_loop.step_calls(p_train, pipeline.train_batches(
            arrays, global_batch=batch_size, num_devices=1, seed=0, epoch=epoch[0]), key)
      else:
        yield from train_loop.chunk_calls(p_chunk, data, pipeline.train_indices(
            arrays["label"], global_batch=batch_size, num_devices=1, seed=0, epoch=epoch[0]), key, per_call)

  source = calls()

  def hlo_text():
    """The compiled chunk's HLO (the fused path): its operations' names and what each computes. Its first call
    as `chunk_calls` makes it, lowered and compiled instead of run."""
    compiled_text = lambda *args: p_chunk.lower(*args).compile().as_text()
    indices = pipeline.train_indices(arrays["label"], global_batch=batch_size, num_devices=1, seed=0, epoch=1)
    first_call, _ = next(train_loop.chunk_calls(compiled_text, data, indices, key, per_call))
    return first_call(holder[0])

  def run(num_steps):
    state, done, metrics = holder[0], 0, None
    while done < num_steps:
      fn, n = next(source)
      state, metrics = fn(state)
      done += n
    jax.block_until_ready(metrics)
    holder[0] = state
    return done

  run.hlo_text = hlo_text
  return run


def _runner_in_kernel_grad_form(form: str, config, batch_size: int, per_call: int, arrays: dict):
  """`_runner`, its chunk compiled with the kernel gradient in `form`: by two calls, since the second one, whose
  state is the first one's output rather than the fresh one, compiles the chunk again."""
  with common.kernel_grad_form(form):
    run = _runner(config, batch_size, per_call, arrays)
    run(1)
    run(1)
  return run


def main(argv):
  del argv
  for form in FLAGS.kernel_grads:
    try:
      common.parse_kernel_grad_form(form)
    except ValueError as e:
      raise app.UsageError(f"--kernel_grads: {e}") from None
  images, labels = common.synthetic_batches(1, num_batches=FLAGS.examples)
  arrays = {"image": images, "label": labels}
  per_calls = [1] + [int(k) for k in FLAGS.per_call.split(",")]
  peak_before = common.matmul_peak_flops()
  cases, runners = [], []
  for batch_size in (int(b) for b in FLAGS.batch_sizes.split(",")):
    for name in FLAGS.models.split(","):
      config = common.MODEL_CONFIGS[name]()
      flops = common.flops_per_image(config, batch_size)
      for k in per_calls:
        cases.append((name, batch_size, k, flops, ""))
        runners.append(_runner(config, batch_size, k, arrays))
        for form in (v for v in FLAGS.kernel_grads if k > 1):
          cases.append((name, batch_size, k, flops, f", kernel gradient {form}"))
          runners.append(_runner_in_kernel_grad_form(form, config, batch_size, k, arrays))
  rates, rounds = _measure(runners, [c[1] for c in cases])
  peak = (peak_before + common.matmul_peak_flops()) / 2
  print(f"JAX {jax.__version__}, {jax.devices()[0].platform}, 1 device; float32 matmul peak "
        f"{peak_before / 1e9:.0f} GFLOP/s before, {peak / 1e9:.0f} mean; median of {FLAGS.rounds} rounds\n")
  print("| model | batch | MFLOP/image | steps per call | images/s | vs per-step loop | GFLOP/s | share of peak |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  base = {}
  for (name, batch_size, k, flops, variant), rate in zip(cases, rates):
    base.setdefault((name, batch_size), rate)
    label = "1 (per-step loop, host batches)" if k == 1 else f"{k} (fused, split on device{variant})"
    print(f"| {name} | {batch_size} | {flops / 1e6:.2f} | {label} | {rate:,.0f} | "
          f"{rate / base[(name, batch_size)]:.2f}x | {rate * flops / 1e9:.0f} | {rate * flops / peak:.0%} |")
  # How far the matrix products alone would go at the step's own shapes: the ceiling the step's arithmetic has
  # on this machine whatever the rest costs (im2col, pooling, the optimizer, gathers), and the share of the
  # fused step's time its matrix products would take on their own.
  print("\n| model | batch | matmuls per step | their MFLOP/image | the matmuls alone, GFLOP/s | share of peak | "
        "their time alone, share of the fused step's |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  fastest = {}
  for (name, batch_size, k, _, variant), rate in zip(cases, rates):
    if k > 1 and not variant:
      fastest[name, batch_size] = max(fastest.get((name, batch_size), 0.0), rate)
  products = {}  # (name, batch_size) -> (the step's products, each distinct one timed alone)
  for (name, batch_size), rate in fastest.items():
    matmuls = common.step_matmuls(common.MODEL_CONFIGS[name](), batch_size)
    products[name, batch_size] = matmuls, common.time_matmuls(matmuls)
    dot_flops, ceiling = common.matmul_ceiling(matmuls, timed=products[name, batch_size][1])
    per_image = dot_flops / batch_size
    print(f"| {name} | {batch_size} | {len(matmuls)} | {per_image / 1e6:.2f} | {ceiling / 1e9:.0f} | "
          f"{ceiling / peak:.0%} | {rate * per_image / ceiling:.0%} |")
  if FLAGS.per_matmul:
    _per_matmul_table(fastest, products, peak)
  if FLAGS.kernel_grads:
    _kernel_grad_table(cases, rates, rounds)
  if FLAGS.profile_ops:
    fastest_runner = {}
    for (name, batch_size, k, _, variant), rate, run in zip(cases, rates, runners):
      if k > 1 and not variant and rate >= fastest[name, batch_size]:
        fastest_runner[name, batch_size] = (k, run)
    for (name, batch_size), (k, run) in fastest_runner.items():
      _profile_ops_table(name, batch_size, k, run, fastest[name, batch_size])


def _kernel_grad_table(cases, rates, rounds):
  """Each --kernel_grads form against the default fused case with the same steps per call: the median of the
  rounds' ratios (each round measures both, one after the other)."""
  print("\n| model | batch | steps per call | kernel gradient | images/s | vs the default (stacked+transposed), "
        "median of the rounds' ratios |")
  print("| --- | --- | --- | --- | --- | --- |")
  default = {}
  for i, (name, batch_size, k, _, variant) in enumerate(cases):
    if k > 1 and not variant:
      default[name, batch_size, k] = i
  for i, (name, batch_size, k, _, variant) in enumerate(cases):
    if variant:
      ratio = np.median(np.array(rounds[i]) / np.array(rounds[default[name, batch_size, k]]))
      print(f"| {name} | {batch_size} | {k} | {variant.split()[-1]} | {rates[i]:,.0f} | {ratio:.2f}x |")


def _profile_ops_table(name: str, batch_size: int, per_call: int, run, rate: float):
  """Time per image of each XLA operation of the step, from a `jax.profiler` trace of whole fused calls: the
  events that name an HLO operation (one per executed thunk: the fusions, products and copies of the compiled
  step), summed over the trace; a loop that holds others (the chunk's scan, the dropout's random bits)
  counts only its own time. Operations run concurrently on the two cores, so the column can sum to more than the
  step's wall time; its shares are of that sum. `rate` (images/s) sizes the trace to about 2 s."""
  what = {}  # operation -> its op_name in the compiled HLO, without the step's own prefix
  for match in re.finditer(r"^\s*(?:ROOT )?%([\w.-]+) = .*?op_name=\"([^\"]*)\"", run.hlo_text(), re.M):
    what[match.group(1)] = re.sub(r"^.*?closed_call/", "", match.group(2))
  steps = max(1, round(2.0 * rate / batch_size / per_call)) * per_call
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    start = time.perf_counter()
    done = run(steps)
    wall = time.perf_counter() - start
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    profile = jax.profiler.ProfileData.from_file(path)
  ops, counts = collections.Counter(), collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      # The thunks of the compiled step (events naming an HLO operation), in start order; a loop's own time is
      # its span less the thunks it holds (they follow it on the same thread).
      events = sorted(((e.start_ns, e.end_ns, e.name) for e in line.events
                       if any(k == "hlo_op" for k, _ in e.stats)), key=lambda e: (e[0], -e[1]))
      open_spans = []  # [end, name, own time] of the events holding the current one
      for begin, end, op in events:
        while open_spans and open_spans[-1][0] <= begin:
          _, done_op, own = open_spans.pop()
          ops[done_op] += own
        if open_spans:
          open_spans[-1][2] -= end - begin
        open_spans.append([end, op, end - begin])
        counts[op] += 1
      for _, done_op, own in open_spans:
        ops[done_op] += own
  total = sum(ops.values())
  images = done * batch_size
  print(f"\n{name}, batch {batch_size}, {per_call} steps per call, under the profiler: {done} steps in "
        f"{wall:.2f} s ({wall / images * 1e6:.1f} us per image of wall time); the operations' times sum to "
        f"{total / 1e3 / images:.1f} us per image")
  print("\n| XLA operation | what it computes (op_name) | per step | us/image | share of the sum |")
  print("| --- | --- | --- | --- | --- |")
  for op, ns in ops.most_common(FLAGS.profile_ops_rows):
    print(f"| {op} | {what.get(op, '-')} | {counts[op] / done:.1f} | {ns / 1e3 / images:.2f} | {ns / total:.1%} |")


def _per_matmul_table(fastest, products, peak):
  """Each distinct matrix product of the step alone (lhs, rhs, contracted dimensions), its GFLOP/s and its time
  per image beside the fused step's: which products keep the step's arithmetic from the matmul peak."""
  print("\n| model | batch | lhs | rhs | contracted (lhs; rhs) | times per step | MFLOP/image | alone, GFLOP/s | "
        "share of peak | us/image (all its times) | fused step us/image |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for (name, batch_size), rate in fastest.items():
    matmuls, timed = products[name, batch_size]
    for (lhs, rhs, dims), times in collections.Counter(matmuls).items():
      flops, seconds = timed[lhs, rhs, dims]
      flop_rate = flops / seconds
      (contract_lhs, contract_rhs), _ = dims
      print(f"| {name} | {batch_size} | {'x'.join(map(str, lhs))} | {'x'.join(map(str, rhs))} | "
            f"{','.join(map(str, contract_lhs))}; {','.join(map(str, contract_rhs))} | {times} | "
            f"{times * flops / batch_size / 1e6:.2f} | {flop_rate / 1e9:.0f} | {flop_rate / peak:.0%} | "
            f"{times * flops / flop_rate / batch_size * 1e6:.1f} | {1e6 / rate:.1f} |")

def _measure(runners, batch_sizes):
  """Median images/s per runner over alternating rounds (each measurement whole calls, about --seconds), and
  each runner's rate in every round."""
  num_steps = []
  for i, run in enumerate(runners):
    run(1)  # compile (the fused path compiles its chunk here)
    run(5)  # warm
    start = time.perf_counter()
    done = run(20)
    num_steps.append(max(3, int(FLAGS.seconds / ((time.perf_counter() - start) / done))))
    print(f"case {i + 1}/{len(runners)} compiled: {done * batch_sizes[i] / (time.perf_counter() - start):.0f} "
          f"img/s", file=sys.stderr, flush=True)
  rates = [[] for _ in runners]
  for r in range(FLAGS.rounds):
    for i in common.alternating_order(len(runners), r):
      start = time.perf_counter()
      done = runners[i](num_steps[i])
      rates[i].append(done * batch_sizes[i] / (time.perf_counter() - start))
    print(f"round {r + 1}: " + " ".join(f"{x[-1]:.0f}" for x in rates), file=sys.stderr, flush=True)
  return [float(np.median(r)) for r in rates], rates


if __name__ == "__main__":
  app.run(main)

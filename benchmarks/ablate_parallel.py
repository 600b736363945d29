"""Sweep wall time by worker split: the same small sweep (2 arms x 2 seeds of configs/faults/healthy.py on
10,000 Fashion-MNIST examples for 2 epochs) with `--parallel=1` (one worker using every core) and
`--parallel=N` (N workers, the cores split between them), alternating round by round, each into a fresh
directory with a fresh XLA cache (so neither case gains from the other's compilations).

    python -m benchmarks.ablate_parallel [--rounds=1] [--parallel=1,2]
"""

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags

from cnn_val import ablate, rundir
from configs.faults import healthy

_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternating rounds (median reported).")
_PARALLEL = flags.DEFINE_list("parallel", ["1", "2"], "Worker counts to compare.")
_EXAMPLES = flags.DEFINE_integer("examples", 10_000, "Training examples per run.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per run.")


def _sweep():
  config = healthy.get_config()
  config.num_epochs = _EPOCHS.value
  config.data.max_train_examples = _EXAMPLES.value
  config.doctor = False
  return ablate.Sweep(rundir.config_to_dict(config),
                      [ablate.Arm("base"), ablate.Arm("drop", {"model.dropout_rate": 0.3})], [0, 1])


def main(argv):
  del argv
  times = {int(p): [] for p in _PARALLEL.value}
  for _ in range(_ROUNDS.value):
    for parallel in times:
      out = tempfile.mkdtemp(prefix=f"ablate_p{parallel}_")
      cache = os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
      start = time.perf_counter()
      ablate.run_sweep(_sweep(), out, parallel=parallel, log=lambda _: None)
      times[parallel].append(time.perf_counter() - start)
      if cache is not None:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
      shutil.rmtree(out)
  base = sorted(times[min(times)])[len(times[min(times)]) // 2]
  print(f"| workers | sweep wall time (4 runs, {_EXAMPLES.value} examples x {_EPOCHS.value} epochs) | vs {min(times)} worker |")
  print("| --- | --- | --- |")
  for parallel, values in times.items():
    median = sorted(values)[len(values) // 2]
    print(f"| {parallel} | {median:.1f} s | {base / median:.2f}x |")


if __name__ == "__main__":
  app.run(main)

"""The wall time of a 3-seed verification of one fix (a baseline and a fix arm over seeds 0-2: 6 runs of
configs/faults/healthy.py on 10,000 Fashion-MNIST examples for 2 epochs) by worker split, by train-step path
and by population: `--parallel=1` (one worker using every core) against `--parallel=N` (N workers, the cores
split between them), each with the per-step loop (`steps_per_call=1`) and with fused chunks on the
device-resident split (`steps_per_call=0`, auto), and with each arm's seeds trained as one population in one
worker (`--population=always`: fused chunks, `cnn_val.population`) or a worker per run (`never`). Cases
alternate round by round, each into a fresh directory with a fresh XLA cache (so no case gains from another's
compilations).

    python -m benchmarks.ablate_parallel [--rounds=1] [--parallel=1,2] [--steps_per_call=1,0]
        [--population=never,always]
"""

import itertools
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags

from cnn_val import ablate, rundir
from cnn_val.configs.faults import healthy

_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternating rounds (median reported).")
_PARALLEL = flags.DEFINE_list("parallel", ["1", "2"], "Worker counts to compare.")
_PER_CALL = flags.DEFINE_list("steps_per_call", ["1", "0"], "config.steps_per_call values to compare.")
_EXAMPLES = flags.DEFINE_integer("examples", 10_000, "Training examples per run.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per run.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per arm.")
_POPULATION = flags.DEFINE_list("population", ["never"], "Engine --population values to compare (never, always); "
                                "a population always trains fused chunks, so it is measured once per worker count.")


def _sweep(steps_per_call: int):
  config = healthy.get_config()
  config.num_epochs = _EPOCHS.value
  config.data.max_train_examples = _EXAMPLES.value
  config.doctor = False
  config.steps_per_call = steps_per_call
  return ablate.Sweep(rundir.config_to_dict(config),
                      [ablate.Arm("base"), ablate.Arm("drop", {"model.dropout_rate": 0.3})],
                      list(range(_SEEDS.value)))


def main(argv):
  del argv
  cases = [(int(p), int(k), "never") for p, k in itertools.product(_PARALLEL.value, _PER_CALL.value)
           if "never" in _POPULATION.value]
  cases += [(int(p), 0, pop) for p in _PARALLEL.value for pop in _POPULATION.value if pop != "never"]
  times = {case: [] for case in cases}
  for _ in range(_ROUNDS.value):
    for parallel, per_call, population in cases:
      out = tempfile.mkdtemp(prefix=f"ablate_p{parallel}_k{per_call}_{population}_")
      cache = os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
      start = time.perf_counter()
      ablate.run_sweep(_sweep(per_call), out, parallel=parallel, population=population, log=lambda _: None)
      times[parallel, per_call, population].append(time.perf_counter() - start)
      if cache is not None:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
      shutil.rmtree(out)
  median = {case: sorted(v)[len(v) // 2] for case, v in times.items()}
  base = median[cases[0]]
  runs = 2 * _SEEDS.value
  print(f"| workers | steps per call | population | wall time ({runs} runs, {_EXAMPLES.value} examples x "
        f"{_EPOCHS.value} epochs) | vs the first row |")
  print("| --- | --- | --- | --- | --- |")
  for (parallel, per_call, population), value in median.items():
    label = {1: "1 (per-step loop)", 0: "auto (fused)"}.get(per_call, str(per_call))
    pop = f"an arm's {_SEEDS.value} seeds at once" if population == "always" else "a worker per run"
    print(f"| {parallel} | {label} | {pop} | {value:.1f} s | {value / base:.2f}x |")


if __name__ == "__main__":
  app.run(main)

"""The wall time of a 3-seed verification of one fix (a baseline and a fix arm over seeds 0-2: 6 runs of
configs/faults/healthy.py on 10,000 Fashion-MNIST examples for 2 epochs) by worker split, by train-step path
and by population: `--parallel=1` (one worker using every core) against `--parallel=N` (N workers, the cores
split between them), each with the per-step loop (`steps_per_call=1`) and with fused chunks on the
device-resident split (`steps_per_call=0`, auto), and with each arm's seeds trained as one population in one
worker (`--population=always`: fused chunks, `cnn_val.population`) or a worker per run (`never`).

`--before=REF` adds the same verification on the code of git commit REF (its own engine and trainer, 1 worker,
its defaults; extracted with `git archive` into a temporary folder): the "before" of a change, measured in the
same run as the "after".

Every case is one process (`python -c` of the same driver with the tree's code first on PYTHONPATH), timed
from its start to its end; cases alternate round by round, each into a fresh directory with a fresh XLA cache
(so no case gains from another's compilations).

    python -m benchmarks.ablate_parallel [--rounds=1] [--parallel=1,2] [--steps_per_call=1,0]
        [--population=never,always] [--before=REF] [--after=REF]
"""

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternating rounds (median reported).")
_PARALLEL = flags.DEFINE_list("parallel", ["1", "2"], "Worker counts to compare.")
_PER_CALL = flags.DEFINE_list("steps_per_call", ["1", "0"], "config.steps_per_call values to compare.")
_EXAMPLES = flags.DEFINE_integer("examples", 10_000, "Training examples per run.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per run.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per arm.")
_POPULATION = flags.DEFINE_list("population", ["never"], "Engine --population values to compare (never, always); "
                                "a population always trains fused chunks, so it is measured once per worker count.")
_BEFORE = flags.DEFINE_string("before", "", "A git commit whose code is measured too (1 worker, its defaults).")
_AFTER = flags.DEFINE_string("after", "", "A git commit whose code the other cases run (default: this working "
                             "tree; a commit leaves the tree free to change while the benchmark runs).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One verification, in a process of its own, on the cnn_val that PYTHONPATH puts first. Fields and arguments
# that an older tree lacks are left at its defaults.
_DRIVER = """
import sys
from cnn_val import ablate, rundir
from cnn_val.configs.faults import healthy
out, parallel, per_call, population, examples, epochs, seeds = sys.argv[1:]
config = healthy.get_config()
config.num_epochs, config.data.max_train_examples, config.doctor = int(epochs), int(examples), False
options = {}
if per_call != "default":
  config.steps_per_call = int(per_call)
if population != "default":
  options["population"] = population
sweep = ablate.Sweep(rundir.config_to_dict(config),
                     [ablate.Arm("base"), ablate.Arm("drop", {"model.dropout_rate": 0.3})], list(range(int(seeds))))
ablate.run_sweep(sweep, out, parallel=int(parallel), log=lambda _: None, **options)
"""


def _tree(ref: str, folder: str) -> str:
  """The code of commit `ref` in `folder`/`ref`, importable as cnn_val (its configs linked as cnn_val.configs,
  as an install maps them)."""
  tree = os.path.join(folder, ref)
  os.makedirs(tree)
  archive = subprocess.run(["git", "-C", REPO, "archive", ref], check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
  if not os.path.exists(os.path.join(tree, "cnn_val", "configs")):
    os.symlink("../configs", os.path.join(tree, "cnn_val", "configs"))
  return tree


def _measure(tree: str, parallel: int, per_call, population: str) -> float:
  out = tempfile.mkdtemp(prefix=f"ablate_p{parallel}_k{per_call}_{population}_")
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
  start = time.perf_counter()
  subprocess.run([sys.executable, "-c", _DRIVER, out, str(parallel), str(per_call), population,
                  str(_EXAMPLES.value), str(_EPOCHS.value), str(_SEEDS.value)], cwd=tree, env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  seconds = time.perf_counter() - start
  shutil.rmtree(out)
  return seconds


def main(argv):
  del argv
  cases = [("now", int(p), int(k), "never") for p, k in itertools.product(_PARALLEL.value, _PER_CALL.value)
           if "never" in _POPULATION.value]
  cases += [("now", int(p), 0, pop) for p in _PARALLEL.value for pop in _POPULATION.value if pop != "never"]
  folder = tempfile.mkdtemp(prefix="ablate_before_")
  trees = {"now": _tree(_AFTER.value, folder) if _AFTER.value else REPO}
  if _BEFORE.value:
    trees["before"] = _tree(_BEFORE.value, folder)
    cases.insert(0, ("before", 1, "default", "default"))
  times = {case: [] for case in cases}
  try:
    for _ in range(_ROUNDS.value):
      for case in cases:
        times[case].append(_measure(trees[case[0]], *case[1:]))
  finally:
    shutil.rmtree(folder)
  median = {case: sorted(v)[len(v) // 2] for case, v in times.items()}
  base = median[cases[0]]
  runs = 2 * _SEEDS.value
  print(f"| code | workers | steps per call | population | wall time ({runs} runs, {_EXAMPLES.value} examples x "
        f"{_EPOCHS.value} epochs) | vs the first row |")
  print("| --- | --- | --- | --- | --- | --- |")
  for (code, parallel, per_call, population), value in median.items():
    code = f"{_BEFORE.value} (before)" if code == "before" else (_AFTER.value or "this tree")
    label = {1: "1 (per-step loop)", 0: "auto (fused)"}.get(per_call, str(per_call))
    pop = {"always": f"an arm's {_SEEDS.value} seeds at once", "default": "its default"}.get(
        population, "a worker per run")
    print(f"| {code} | {parallel} | {label} | {pop} | {value:.1f} s | {value / base:.2f}x |")


if __name__ == "__main__":
  app.run(main)

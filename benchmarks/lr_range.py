"""The LR range test's calibration (README, The doctor, "The learning rate against the run's own range test"): the
sweep of `cnn_val/lr_range.py` for each config and seed, where its suggestion (the steepest descent) and its loss
minimum fall against the config's own rate, and whether the doctor's `lr_too_low` rule would fire on it.

    .venv/bin/python -m benchmarks.lr_range [--config=NAME=MODULE[:FIELD=VALUE,...] ...] [--seeds=0,1,2]

MODULE is a config under configs/ as `cnn_val.configs` names it (faults.healthy for configs/faults/healthy.py);
the overrides are written as ablate's --arm writes them. The sweep does not depend on the configured rate (it
sweeps 1e-7 to 10 with the config's optimizer), so a rate k times lower than a config's sits k times further below
the same minimum. Prints a markdown table, one row per config and seed, each sweep in this process on data loaded
once per config.
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from cnn_val import lr_range, rundir
from cnn_val.ablate import sweep as ablate_sweep
from cnn_val.data import loading
from cnn_val.doctor import signal_rules

DEFAULT_CONFIGS = (
    "default=default",
    "fm_bn=fashion_mnist_bn",
    "fm_small_model=faults.small_model",
    "fm_sgd=faults.healthy:optim.optimizer=sgd",
    "fm_resnet=cifar10_resnet:data.name=fashion_mnist",
    "digits=mnist5k",
    "digits_resnet=cifar10_resnet:data.name=npz,data.root=data/mnist5k.npz",
)
_CONFIGS = flags.DEFINE_multi_string("config", list(DEFAULT_CONFIGS), "NAME=MODULE[:FIELD=VALUE,...], repeated.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed: the initialisation and the batches).")


def parse(spec: str):
  """'name=module:field=value,field=value' -> (name, the config dict with the overrides, seed not yet set)."""
  name, _, rest = spec.partition("=")
  module, _, overrides = rest.partition(":")
  if not name or not module:
    raise app.UsageError(f"--config={spec!r}: expected NAME=MODULE[:FIELD=VALUE,...], e.g. "
                         f"fm_sgd=faults.healthy:optim.optimizer=sgd.")
  try:
    config = importlib.import_module(f"cnn_val.configs.{module}").get_config()
    return name, rundir.config_to_dict(config), ablate_sweep.parse_overrides(overrides)
  except (ImportError, ablate_sweep.SweepError) as e:
    raise app.UsageError(f"--config={spec!r}: {e}") from None


def main(argv):
  del argv
  print("| config | seed | its rate | suggestion (how) | loss minimum at | minimum / rate | suggestion / rate | "
        "lr_too_low by the test | seconds |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for spec in _CONFIGS.value:
    name, base, overrides = parse(spec)
    arrays = None
    for seed in map(int, _SEEDS.value):
      config = ablate_sweep.config_from_dict(ablate_sweep.run_config(base, overrides, seed))
      if arrays is None:
        splits, arrays = loading.load_data(config)
      found = lr_range.sweep(config, arrays, splits.num_classes, splits.image_shape)
      rate, suggestion, at_min = config.optim.learning_rate, found["suggestion"], found["lr_at_min_loss"]
      how = "steepest" if found["method"].startswith("steepest") else found["method"]
      below = at_min / rate if at_min else None
      fires = below is not None and below >= signal_rules.lr_test_threshold(config.optim.optimizer)
      number = lambda value, spec: "-" if value is None else format(value, spec)  # a sweep too short to judge
      print(f"| {name} | {seed} | {rate:g} | {number(suggestion, '.2g')} ({how}) | {number(at_min, '.2g')} | "
            f"{number(below, '.1f')} | {number(suggestion and suggestion / rate, '.2f')} | {'yes' if fires else 'no'} "
            f"| {found['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
  app.run(main)

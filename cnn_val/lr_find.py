"""LR range test: `python -m cnn_val.lr_find --config=configs/default.py --workdir=runs/lr_find`, or, for a run
already trained, `python -m cnn_val.lr_find --run=runs/default [--workdir=OUT]` (its config.json; the results go
into the run directory unless --workdir says elsewhere).

Writes lr_find.json (rates, losses, smoothed losses, the suggestion and how it was found) and
plots/lr_find.png to --workdir (or the --run directory); the doctor uses the suggestion for learning-rate fixes
when the file sits in the run directory it diagnoses. `doctor --verify` runs it (`--run=W
--workdir=W/verify/lr_find`) before it explores the lever menu, whose `lr_range_test` lever trains the
suggested rate.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from cnn_val import cli, lr_range

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write lr_find.json and plots/ (with --run: the run "
                               "directory by default).")
_RUN = flags.DEFINE_string("run", None, "A run directory instead of --config: its config.json is the config.")
_STEPS = flags.DEFINE_integer("num_steps", 200, "Steps of the sweep (from 1e-7 to 10).")


def _config_and_workdir():
  if _RUN.value:
    if _CONFIG.value is not None:
      raise app.UsageError("--run takes the config from the run's config.json: drop --config, or drop --run.")
    from cnn_val.ablate.sweep import stored_config  # pylint: disable=import-outside-toplevel
    return stored_config(_RUN.value), _WORKDIR.value or _RUN.value
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("Give --config and --workdir (or --run=RUN_DIR for a run already trained).")
  return _CONFIG.value, _WORKDIR.value


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.keep_tensorflow_off_accelerators()
  config, workdir = _config_and_workdir()
  result = lr_range.lr_range_test(config, workdir, num_steps=_STEPS.value)
  print(f"Suggested learning rate: {result['suggestion']} ({result['method']}); configured: "
        f"{result['configured_lr']}. Plot: {workdir}/plots/lr_find.png")


if __name__ == "__main__":
  cli.run(main)

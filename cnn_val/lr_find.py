"""LR range test: `python -m cnn_val.lr_find --config=configs/default.py --workdir=runs/lr_find`.

Writes lr_find.json (rates, losses, smoothed losses, the suggestion and how it was found) and
plots/lr_find.png to --workdir; the doctor uses the suggestion for learning-rate fixes when the file sits
in the run directory it diagnoses.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from cnn_val import cli, lr_range

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write lr_find.json and plots/.", required=True)
_STEPS = flags.DEFINE_integer("num_steps", 200, "Steps of the sweep (from 1e-7 to 10).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.keep_tensorflow_off_accelerators()
  result = lr_range.lr_range_test(_CONFIG.value, _WORKDIR.value, num_steps=_STEPS.value)
  print(f"Suggested learning rate: {result['suggestion']} ({result['method']}); configured: "
        f"{result['configured_lr']}. Plot: {_WORKDIR.value}/plots/lr_find.png")


if __name__ == "__main__":
  cli.run(main)

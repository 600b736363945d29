"""Re-diagnoses a run directory: `python -m cnn_val.doctor --workdir=runs/default [--reaudit]`.

Writes diagnosis.json, report.md and plots/ from the run directory's files alone (no training process).
The audit is reused from audit.json; --reaudit (or a missing audit.json) recomputes it from the data named
in config.json.
"""

from absl import app
from absl import flags

from cnn_val import diagnose

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to diagnose.", required=True)
_REAUDIT = flags.DEFINE_bool("reaudit", False, "Recompute audit.json from the run's data.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  result = diagnose.examine(_WORKDIR.value, reaudit=_REAUDIT.value)
  print(diagnose.summary(result))
  print(f"Report: {_WORKDIR.value}/report.md")


if __name__ == "__main__":
  app.run(main)

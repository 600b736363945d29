"""Early stopping in the doctor: a run that `config.early_stopping_patience` ended while it was still learning.

A patience shorter than the noise of one evaluation stops a run on a dip that is only noise: validation accuracy
fails to improve for an evaluation or two while the validation loss is still at its lowest, and the rest of the
budget is never trained. The single run shows it (the stop left much of the budget, the loss had not begun to rise,
the accuracy's dip is within its noise); `--verify` trains the run with more patience to say what it cost (README,
"A patience too short"). A run whose validation loss had been rising for longer than the patience stopped because
it began to overfit, which is what early stopping is for: not this finding.
"""

from __future__ import annotations

import math

from cnn_val import rundir
from cnn_val.doctor.run_view import Run, accuracy_standard_error
from cnn_val.doctor.run_view import finite as _numeric

# Calibrated on 32 early-stopped runs of three datasets and budgets, each against the same seed trained to the end
# (the same run up to the stop, so the difference is what the stop cost; README, "A patience too short"): the rule
# fires on 16 whose stop cost 0.2-6.9 points, on none that cost nothing, and leaves 16 that cost -0.2-1.1.
# The stop left at least this share of the run's epochs untrained (medium; high from UNUSED_HIGH).
UNUSED_SHARE = 1 / 4
UNUSED_HIGH = 1 / 2
# The validation loss at the stop within this share of its lowest, the lowest at one of the last patience + 1
# evaluations: the loss had not begun to rise, so the model was not yet overfitting. Conservative: at 5% the rule
# would also fire on two stops of the 5,000 digits, one that cost 0.6 points and one that cost nothing.
LOSS_SLACK = 0.02
# The accuracy's dip, from the best evaluation to the mean of those after it, under this many standard errors of
# the difference of two evaluations (binomial, Agresti-Coull, on the validation split's size): noise.
NOISE_Z = 2.0
# The patience a finding recommends: at least this many evaluations, and at least PATIENCE_FACTOR x the run's.
PATIENCE_MIN = 5
PATIENCE_FACTOR = 4


def stopped_too_soon(run: Run) -> dict | None:
  """Where early stopping ended the run (early_stopped.json, at its last evaluation) with UNUSED_SHARE of its
  epochs or more untrained, its validation loss not yet rising (LOSS_SLACK) and its accuracy's dip within the noise
  (NOISE_Z): the evidence, with the severity it supports (high from UNUSED_HIGH); else None."""
  stop = rundir.read_json(run.workdir, rundir.EARLY_STOP_FILE) if run.workdir else None
  epochs = run.get("num_epochs")
  if (not isinstance(stop, dict) or not run.rows or run.diverged or not _numeric(epochs) or epochs <= 0
      or stop.get("epoch") != run.last.get("epoch")):
    return None
  rows = [r for r in run.rows if _numeric(r.get("val_accuracy")) and _numeric(r.get("val_loss"))]
  patience = stop.get("patience")
  if len(rows) < 2 or len(rows) != len(run.rows) or not _numeric(patience) or patience < 1:
    return None
  unused = (epochs - run.last["epoch"]) / epochs
  if unused < UNUSED_SHARE:
    return None
  accuracies, losses = [r["val_accuracy"] for r in rows], [r["val_loss"] for r in rows]
  best = accuracies.index(max(accuracies))  # the first best: early stopping counts a tie as no improvement
  after = accuracies[best + 1:] or accuracies[-1:]
  dip = accuracies[best] - sum(after) / len(after)
  n_val = run.split_count("validation")
  noise = NOISE_Z * math.sqrt(2) * accuracy_standard_error(accuracies[best], n_val) if n_val else None
  lowest = min(losses)
  lowest_at = losses.index(lowest)
  recent = lowest_at >= len(losses) - 1 - int(patience)
  if not (recent and losses[-1] <= (1 + LOSS_SLACK) * lowest and noise is not None and dip <= noise):
    return None
  return {"stopped_at_epoch": run.last["epoch"], "num_epochs": int(epochs), "patience": int(patience),
          "unused_share": round(unused, 4), "threshold": round(UNUSED_SHARE, 4),
          "best_epoch": rows[best]["epoch"], "best_val_accuracy": round(accuracies[best], 5),
          "dip_after_best": round(dip, 5), "noise": round(noise, 5),
          "val_loss_lowest_epoch": rows[lowest_at]["epoch"],
          "val_loss_at_stop_over_lowest": round(losses[-1] / lowest, 4) if lowest > 0 else None,
          "severity": "high" if unused >= UNUSED_HIGH else "medium"}


def patience_options(evidence: dict) -> tuple[list[tuple[str, dict]], str]:
  """The remedies, as options (name, overrides), and what to do: more patience (`more_patience`: PATIENCE_FACTOR x
  the run's, at least PATIENCE_MIN evaluations), and no early stopping (`no_early_stopping`: the whole budget; the
  best checkpoint is kept and its test accuracy reported either way)."""
  patience = max(PATIENCE_MIN, PATIENCE_FACTOR * evidence["patience"])
  options = [("more_patience", {"config.early_stopping_patience": patience}),
             ("no_early_stopping", {"config.early_stopping_patience": 0})]
  return options, (f"Give early stopping more patience (config.early_stopping_patience {evidence['patience']} -> "
                   f"{patience}), or train the whole budget (0: off; the best checkpoint is kept either way).")


def describe(evidence: dict) -> str:
  """The evidence in words, for the finding's explanation."""
  if evidence["val_loss_lowest_epoch"] == evidence["stopped_at_epoch"]:
    loss = "the validation loss was at its lowest at the stop"
  else:
    loss = (f"the validation loss was at its lowest at epoch {evidence['val_loss_lowest_epoch']} and "
            f"{evidence['val_loss_at_stop_over_lowest'] or 1.0:.3g}x that lowest at the stop")
  return (f"Early stopping ended the run at epoch {evidence['stopped_at_epoch']} of {evidence['num_epochs']} "
          f"(patience {evidence['patience']}), leaving {evidence['unused_share']:.0%} of its epochs untrained, while "
          f"it was still learning: {loss} (not yet rising, as it does once a model overfits), and validation "
          f"accuracy dipped {100 * evidence['dip_after_best']:.2f} points after its best at epoch "
          f"{evidence['best_epoch']}, within the noise of one evaluation ({100 * evidence['noise']:.2f} points: "
          f"{NOISE_Z:g} standard errors of a difference). A patience shorter than that noise stops a run on a dip "
          f"that is only noise.")

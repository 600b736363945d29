"""The learning-rate schedule in the doctor's signal rules: a schedule that takes the rate to almost nothing long
before the run ends (an exponential decay a decade too fast: `decay_steps` 500 for 5,000), which leaves the last
part of the run training at a rate too low to move the weights, and the remedies for it (README, "A schedule that
decays too fast"). Read from the rate every evaluation logs (metrics.jsonl's `lr`), so it holds for any schedule."""

from __future__ import annotations

import math

from cnn_val.doctor.run_view import Run
from cnn_val.doctor.run_view import finite as _numeric

# The rate under this share of its peak moves the weights by almost nothing: Fashion-MNIST's recipe at Adam 1e-3
# read an update/parameter ratio of 2e-3 an epoch, and 5e-5 once its rate fell to 0.8% (decay_steps 500).
LR_FLOOR = 0.01
# ... for this share of the run's steps or more (from the first evaluation under the floor to the last): the
# schedule decays too fast (medium; high from DECAYED_HIGH). Schedules that end where they should spend far less
# there: a cosine to zero its last 6% of steps (read at evaluations, none: only its last one is under), a step
# schedule of 0.2x at 30%, 60% and 80% of the run 20%, the seed's exponential decay none at 10 or 25 epochs (0.30x
# and 0.05x at the end), a constant rate none; of the 204 other runs of three datasets here, none. Decays too fast by
# a decade or more: sklearn's digits at decay_steps 50 (-4.2 points) 32% of their steps, at 20 (-13.2) 72%;
# Fashion-MNIST's recipe at 500 (-3.4) 60% (README, "A schedule that decays too fast").
DECAYED_SHARE = 1 / 4
DECAYED_HIGH = 1 / 2
# Validation accuracy that still gained this much from the evaluation under the floor to the end (the still-learning
# rule's STILL_LEARNING_GAIN) says the small rate still did some work: the finding is then medium at most.
GAIN_UNDER_FLOOR = 0.005
# The floor and the share are compared with this relative margin, so that a rate at exactly 1% of its peak (a step
# schedule of 0.1 -> 0.001) or a share of exactly a quarter does not fire or not by float round-off.
_MARGIN = 1e-6
# The slower decay a finding recommends ends the run at this share of the peak rate (the seed's recipe ends at
# 0.30x over 10 epochs and 0.05x over 25).
SLOWER_DECAY_END = 0.1


def decayed_too_fast(run: Run) -> dict | None:
  """Where the logged rate fell under LR_FLOOR of its peak (the config's rate, or the highest logged, after a
  warm-up) and stayed there for DECAYED_SHARE of the run's steps or more, read at 3 evaluations or more: the
  evidence (the step and epoch from which it stayed under, that share, the rate at the end, the update ratio and
  the validation accuracy gained from there to the end, the severity it supports); else None."""
  rows = [r for r in run.rows if _numeric(r.get("lr")) and _numeric(r.get("step"))]
  if len(rows) < 3 or run.diverged:
    return None
  peak = max([r["lr"] for r in rows] + [v for v in [run.get("optim.learning_rate")] if _numeric(v)])
  if peak <= 0:
    return None
  floor = LR_FLOOR * peak * (1 - _MARGIN)
  under = None
  for i, row in enumerate(rows):
    if all(r["lr"] < floor for r in rows[i:]):
      under = i
      break
  last = rows[-1]["step"]
  if under is None or last <= 0:
    return None
  share = (last - rows[under]["step"]) / last
  if share < DECAYED_SHARE * (1 - _MARGIN):
    return None
  accuracies = [r.get("val_accuracy") for r in rows[under:]]
  gain = (max(a for a in accuracies if _numeric(a)) - accuracies[0]
          if _numeric(accuracies[0]) and any(_numeric(a) for a in accuracies[1:]) else None)
  ratios = [r.get("update_ratio") for r in (rows[under], rows[-1])]
  epochs = [r.get("epoch") for r in (rows[under], rows[-1])]
  rounded = lambda v: float(f"{v:.4g}") if _numeric(v) else None
  return {"peak_lr": rounded(peak), "floor": rounded(LR_FLOOR * peak),
          "under_floor_from_step": int(rows[under]["step"]),
          "under_floor_from_epoch": epochs[0] if _numeric(epochs[0]) else None, "steps": int(last),
          "last_epoch": epochs[1] if _numeric(epochs[1]) else None, "share_of_steps_under_floor": round(share, 4),
          "threshold": round(DECAYED_SHARE, 4), "lr_final": rounded(rows[-1]["lr"]),
          "update_ratio_from": rounded(ratios[0]), "update_ratio_final": rounded(ratios[1]),
          "val_accuracy_gain_under_floor": None if gain is None else round(gain, 5),
          "severity": "high" if share >= DECAYED_HIGH and (gain or 0.0) < GAIN_UNDER_FLOOR else "medium"}


def slower_decay_options(run: Run, evidence: dict) -> tuple[list[tuple[str, dict]], str]:
  """The remedies, as options (name, overrides) and what to do: for an exponential decay, `decay_steps` such that
  the rate ends the run at SLOWER_DECAY_END of its peak (`slower_decay`); and a cosine schedule over the run
  (`cosine`), which keeps the rate up for most of it and takes it to zero at the end."""
  options, said = [], []
  rate, every = run.get("optim.decay_rate"), run.get("optim.decay_steps")
  epochs, evaluated = run.get("num_epochs"), evidence.get("last_epoch")
  # The run's whole length in steps: a run stopped early had more epochs to go.
  total = evidence["steps"] * (epochs / evaluated if _numeric(epochs) and _numeric(evaluated) and evaluated > 0
                               else 1.0)
  if (run.get("optim.schedule") == "exponential" and _numeric(rate) and 0 < rate < 1 and _numeric(every)
      and every > 0):
    drops = math.log(SLOWER_DECAY_END) / math.log(rate)  # decay periods from the peak to SLOWER_DECAY_END
    if run.get("optim.staircase"):  # whole periods: the rate drops by decay_rate at each multiple of decay_steps
      drops = round(drops)
      steps = int(total // drops) if drops >= 2 else 0  # one drop of 10x or more: no slower staircase to offer
    else:
      steps = int(math.ceil(total / drops))
    if steps > every:
      end = rate ** drops if run.get("optim.staircase") else SLOWER_DECAY_END
      options.append(("slower_decay", {"config.optim.decay_steps": steps}))
      said.append(f"decay the rate more slowly (optim.decay_steps {every:g} -> {steps}: the rate then ends the run at "
                  f"{end:.0%} of its peak)")
  if run.get("optim.schedule") != "cosine":
    options.append(("cosine", {"config.optim.schedule": "cosine"}))
    said.append("use a cosine schedule over the run (the rate stays up for most of it and reaches zero at the end)")
  summary = ("; or ".join(said) + ".") if said else "Decay the learning rate more slowly."
  return options, summary[0].upper() + summary[1:]


def describe(evidence: dict) -> str:
  """The evidence in words, for the finding's explanation."""
  ratio = ""
  if evidence["update_ratio_from"] is not None and evidence["update_ratio_final"] is not None:
    ratio = (f" (the update/parameter ratio {evidence['update_ratio_from']:.2g} there, "
             f"{evidence['update_ratio_final']:.2g} at the end; healthy: about 3e-3 early on)")
  gain = evidence["val_accuracy_gain_under_floor"]
  epoch = evidence["under_floor_from_epoch"]
  said = (f"the schedule took the rate under {LR_FLOOR:.0%} of its peak {evidence['peak_lr']:.2g}"
          f"{f' by epoch {epoch:g}' if epoch is not None else ''} (step {evidence['under_floor_from_step']:,}) and "
          f"kept it there for the last {evidence['share_of_steps_under_floor']:.0%} of the run's "
          f"{evidence['steps']:,} steps, down to {evidence['lr_final']:.2g}{ratio}")
  if gain is None:
    return said
  if gain >= GAIN_UNDER_FLOOR:
    return (f"{said}; validation accuracy still gained {100 * gain:.2f} points over them, so the small rate did some "
            f"work (medium at most)")
  return f"{said}: steps that moved the weights by almost nothing, and validation accuracy gained {100 * gain:.2f} " \
         f"points over them"

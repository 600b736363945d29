"""The rules that read the training signals: did training run at all (diverged, pipeline_bug), is the
optimisation working (lr_too_high, lr_too_low, underfitting, lr_plateau). Whether the model generalises
(overfitting, label_noise) is read in generalisation_rules.py, harmful_augmentation in augmentation_rules.py.
Each reads a `Run` and returns a finding or None.

Thresholds are the named constants below, measured on the fault scenarios and healthy runs (README,
"Diagnosis"); the confidence of a finding grows with how far its evidence passes its threshold. The rules that
read the audit are in data_rules.py; the ranking, severity and verdict in rules.py.
"""

from __future__ import annotations

import math

from cnn_val import augment as augment_lib
from cnn_val.doctor.finding import confidence as _confidence
from cnn_val.doctor.finding import finding as _finding
from cnn_val.doctor.generalisation_rules import NOISE_GAP, OVERFIT_GAP, noise_peak
from cnn_val.doctor import schedule
from cnn_val.doctor.regularisation import (decay_ratio_bound, gradient_ratio, l2_decay_blurs_ratio,
                                           weaker_regularization)
from cnn_val.doctor.run_view import RATIO_WINDOW_STEPS, Run, accuracy_standard_error

# Optimisation. The update/parameter ratio is ||step|| / ||weights||, averaged over the first
# run_view.RATIO_WINDOW_STEPS (1,500) steps in whole epochs. Measured on the seed models: Adam at 1e-3 gives
# 2.8-3.4e-3 (15 runs of 1,687-step epochs) and 3.8e-3 (312-step epochs), at 2e-2 7.2-7.8e-3, at 1e-5 8.6e-5.
UPDATE_RATIO_HIGH = 5e-3  # early ratio above this: steps too large for the weights
UPDATE_RATIO_LOW = 3e-4  # early ratio below this: steps too small to move the weights
# The run's own LR range test (lr_find.json: config.lr_range_test, or `python -m cnn_val.lr_find` into the run
# directory): a rate at most 1/LR_TEST_BELOW_MIN[optimizer] of the rate at which the sweep's smoothed loss bottomed
# out is too low (`python -m benchmarks.lr_range`, README). Not the suggestion itself (the steepest descent): it
# moves several-fold from seed to seed where the minimum moves less. Adam's stable range reaches further above its
# usual rate than SGD's: Adam at 1e-3 sits at 1/14 to 1/47 of the minimum (the seed models, a too-small one and a
# BatchNorm ConvNet, both datasets, 3 seeds each; the fault configs without a rate fault up to 1/56, but for the
# ConvNet of 1 and 2 channels at up to 1/155: rules.lr_test_yields_to_capacity) and at 1e-4 at 1/140 to 1/470; SGD
# with momentum 0.9 at 1e-2 at 1/2 to 1/19 (the seed model on both datasets and the BatchNorm ConvNet, 5 seeds each;
# a ResNet-20 at 0.1, 1/2 to 1/12) and at 1e-3, 3.9 points below 1e-2 on Fashion-MNIST, at 1/20 to 1/187.
LR_TEST_BELOW_MIN = {"adam": 100.0, "adamw": 100.0, "sgd": 30.0}
LR_TEST_FAULT_FREE = "up to 56x with Adam, 19x with SGD"  # the farthest runs without a rate fault, as said above
# ... and a rate too high by the test: above 10x its suggestion and within LR_TEST_NEAR_MIN of the minimum (the
# suggestion alone, a steepest descent, came within 9.1x of a good SGD 1e-2 on the BatchNorm ConvNet; every run
# without a rate fault sits at 1/2 of the minimum or below, the lr_too_high fault, Adam at 2e-2, at 1/1.3 to 1.2x).
LR_TEST_NEAR_MIN = 1.5
STILL_IMPROVING = 0.02  # relative fall of the training loss over the last third of epochs: still learning
TOO_SHORT = 0.10  # ... falling this much: underfitting is training too short, not a model too small
# Final training loss / ln(K) above this: the model does not fit its training data. Measured: healthy runs
# without augmentation 0.10-0.13, a 2,066-parameter ConvNet 0.16, a 1,020-parameter one 0.19-0.20.
UNDERFIT_LOSS = 0.16
PLATEAU_GAIN = 0.003  # best validation accuracy gained in the last third of epochs, below: a plateau
# Still learning when it stopped (underfitting: training too short; `still_learning`), on a run that trained all its
# epochs. By the accuracy, where the last evaluation is the best and its validation loss within 2% of the minimum:
# over the last third of the evaluations validation accuracy gained >= STILL_LEARNING_GAIN, >=
# STILL_LEARNING_MIN_IMAGES images and >= STILL_LEARNING_Z standard errors of one evaluation's accuracy (binomial,
# Agresti-Coull, on the validation split's size; high at 2, medium at 1.5). By the loss (high): the validation loss
# fell by >= STILL_LEARNING_LOSS_FALL x ln K over that third to its minimum at the last evaluation, the accuracy
# gaining. Measured (README, "Still learning when it stopped": 3 datasets, 30 runs): runs that converged gain at most
# 0.35 points (1.39 on 144 images: 2 images) and 1.2 standard errors (1.4 on a 2-core rerun), their loss falling by at
# most 0.017 ln K; runs cut short gain 1.4-1.7 points at 2.3-4.1 standard errors (2-3 epochs), 0.7-0.9 at 1.8-2.3
# (batches of 512, Fashion-MNIST), or their loss falls by 0.12-0.20 ln K (sklearn's digits: 3 epochs, or batches of
# 512, 50 steps).
STILL_LEARNING_GAIN = 0.005
STILL_LEARNING_Z = {"high": 2.0, "medium": 1.5}
STILL_LEARNING_LOSS_FALL = 0.10
STILL_LEARNING_MIN_IMAGES = 10
# Pre-flight: failed checks are a pipeline bug when the run ends within this of the majority-class accuracy.
PIPELINE_MARGIN = 0.05
# capacity_fix's two summaries; rules.stopped_too_soon drops the first's `longer` (a run that early stopping ended
# stops there again with the same patience), leaving the second.
LONGER_OR_WIDER_TEXT = "Train longer, or use a wider model."
WIDER_TEXT = "Use a wider model."


# A learning-rate fix lands in this range per optimizer (lowest, highest, the documented default that replaces
# a fix outside it): a rate 10x off a rate that was already absurd (Adam at 1e4) is no fix.
SANE_LR = {"adam": (1e-5, 1e-2, 1e-3), "adamw": (1e-5, 1e-2, 1e-3), "sgd": (1e-4, 1.0, 1e-2)}


def lr_test_threshold(optimizer: str) -> float:
  """LR_TEST_BELOW_MIN for `optimizer` (Adam's for one it does not list)."""
  return LR_TEST_BELOW_MIN.get(optimizer, LR_TEST_BELOW_MIN["adam"])


def _lr_fix(run: Run, factor: float) -> tuple[float, str]:
  """The rate a learning-rate finding recommends: the LR range test's suggestion where it moves the rate the way
  `factor` does (lower for a rate too high, higher for one too low: every run has the test now, and a suggestion on
  the other side of the rate is no fix for it), else `factor` x the rate, within the optimizer's sane range."""
  lr = run.get("optim.learning_rate", 1e-3)
  numeric = isinstance(lr, (int, float)) and math.isfinite(lr)
  suggestion = (run.lr_find or {}).get("suggestion")
  if suggestion and (not numeric or (suggestion < lr if factor < 1 else suggestion > lr)):
    return float(f"{suggestion:.2g}"), "the LR range test's suggestion (lr_find.json)"
  optimizer = run.get("optim.optimizer", "adam")
  low, high, default = SANE_LR.get(optimizer, SANE_LR["adam"])
  new = lr * factor if numeric else math.nan
  if not low <= new <= high:
    return default, (f"{optimizer}'s usual rate: {factor:g}x the current {lr:g} would leave [{low:g}, {high:g}]; "
                     f"run `python -m cnn_val.lr_find` to measure")
  return float(f"{new:.2g}"), f"{factor:g}x the current rate (run `python -m cnn_val.lr_find` to measure)"


def _number(value, spec: str = ".3g") -> str:
  """A number from a run file, which may hold null (JSON has no Inf/NaN) or a non-finite float."""
  return "unrecorded" if value is None else format(value, spec)


def rule_diverged(run: Run):
  if not run.diverged:
    return None
  return _finding(
      "diverged", "high", 0.95,
      {"step": run.diverged.get("step"), "lr": run.diverged.get("lr"), "epochs_completed": len(run.rows)},
      f"The loss or gradient became NaN/Inf at step {run.diverged.get('step')} (learning rate "
      f"{_number(run.diverged.get('lr'))}) and training stopped. Updates of that size blow the weights up.",
      "Lower the learning rate (and clip gradients), then train again in a new workdir.",
      {"config.optim.learning_rate": _lr_fix(run, 0.01)[0], "config.optim.grad_clip_norm": 1.0})


def rule_pipeline_bug(run: Run):
  evidence, problems = {}, []
  audit = run.audit or {}
  for name, split in audit.get("splits", {}).items():
    if split.get("labels_out_of_range"):
      evidence[f"{name}_labels_out_of_range"] = split["labels_out_of_range"]
      problems.append(f"{split['labels_out_of_range']} {name} labels lie outside [0, {run.num_classes})")
    if split.get("pixel_range") and split["pixel_range"][1] < 16:
      evidence[f"{name}_max_pixel"] = split["pixel_range"][1]
      problems.append(f"the {name} images are nearly black (max pixel {split['pixel_range'][1]} of 255): "
                      f"they were probably scaled to [0, 1] before being stored as uint8")
  # The pre-flight checks are a quick proxy (100 steps): a model that learns slowly fails them too. They
  # count as a pipeline bug only if the run itself then learned nothing beyond the majority-class baseline.
  checks = (run.preflight or {}).get("checks", [])
  majority = next((c["value"] for c in checks if c["name"] == "majority_class"), 1 / max(run.num_classes, 1))
  if not run.rows or run.val_acc < majority + PIPELINE_MARGIN:
    for check in checks:
      if not check.get("passed", True):
        evidence[check["name"]] = check.get("value")
        problems.append(check.get("message", check["name"]))
  if not problems:
    return None
  return _finding(
      "pipeline_bug", "high", 0.9, evidence,
      "Something between the files and the loss is broken, so no training setting can fix the accuracy: "
      + "; ".join(problems) + ".",
      "Fix the data pipeline or the model head first (the evidence names what failed).")


def short_ratio_contradicted(run: Run) -> bool:
  """An early update ratio above UPDATE_RATIO_HIGH averaged over fewer steps than its window (weak evidence: the
  first, largest steps) that the run's LR range test contradicts: the rate at or below a third of the rate at which
  the sweep's loss bottomed out (every run without a rate fault sits at 1/2 of it or below, the lr_too_high fault
  at 1/1.3 to 1.2x; sklearn's digits in 50 and 120 steps at 1/29 to 1/43, the 5,000 digits in batches of 512, 150
  steps, at 1/62). Neither lr_too_high nor underfitting then reads the rate into that ratio."""
  ratio, at_min = gradient_ratio(run), (run.lr_find or {}).get("lr_at_min_loss")
  lr = run.get("optim.learning_rate")
  return (ratio is not None and ratio > UPDATE_RATIO_HIGH and run.ratio_steps < RATIO_WINDOW_STEPS
          and bool(at_min) and isinstance(lr, (int, float)) and lr <= at_min / 3)


def rule_lr_too_high(run: Run):
  if not run.rows:
    return None
  ratio = run.early_update_ratio
  lr = run.get("optim.learning_rate", 0)
  finder, at_min = ((run.lr_find or {}).get(k) for k in ("suggestion", "lr_at_min_loss"))
  steps, bound = gradient_ratio(run), decay_ratio_bound(run)  # the ratio less what the decay alone can make
  high_ratio = steps is not None and steps > UPDATE_RATIO_HIGH
  high_vs_finder = bool(finder) and lr > 10 * finder and (not at_min or lr > at_min / LR_TEST_NEAR_MIN)
  if not (high_ratio or high_vs_finder):
    return None
  confidence = _confidence(steps, UPDATE_RATIO_HIGH, log=True) if high_ratio else 0.6
  new_lr, how = _lr_fix(run, 0.1)
  # The ratio's threshold was measured on the seed models. BatchNorm networks (and their larger fan-ins) run
  # higher ratios at a healthy rate (fashion_mnist_bn.py, 94% test: just above it), so there the ratio alone is
  # medium evidence, high only when the training loss did not fall below UNDERFIT_LOSS as well.
  normalised = run.get("model.name") == "ResNet" or bool(run.get("model.batchnorm"))
  fitted = run.last["train_loss"] / math.log(max(run.num_classes, 2)) <= UNDERFIT_LOSS
  weak = high_ratio and normalised and fitted
  # A run shorter than the window averages only its first steps, whose updates are the largest of any run
  # (Adam's first steps move every weight by about the learning rate): a healthy 1-epoch run on 2,000
  # examples (62 steps) read 7.3e-3. Medium at most there, unless the LR range test says so too.
  short = high_ratio and run.ratio_steps < RATIO_WINDOW_STEPS and not high_vs_finder
  if short and short_ratio_contradicted(run):  # ... and none where the run's own range test disagrees
    return None
  return _finding(
      "lr_too_high", "high" if high_ratio and not weak and not short else "medium", confidence,
      {"update_to_param_ratio_early": ratio, "threshold": UPDATE_RATIO_HIGH, "learning_rate": lr,
       "lr_find_suggestion": finder, "train_loss_final": run.last["train_loss"],
       "ratio_window_steps": run.ratio_steps,
       **({"decoupled_weight_decay_share_bound": bound} if bound else {})},
      (f"Early in training each step changed the weights by {ratio:.2g} of their norm on average (healthy "
       f"training here: about 3e-3; above {UPDATE_RATIO_HIGH:g} the optimiser overshoots)" if high_ratio else
       f"The learning rate {lr:g} is more than 10x the LR range test's suggestion {finder:.2g}")
      + (f"; with BatchNorm that ratio is weak evidence, and the training loss fell to "
         f"{run.last['train_loss']:.3f}: a lower rate may still help (--verify tests it)." if weak else
         f"; but over only {run.ratio_steps} steps, fewer than the {RATIO_WINDOW_STEPS} the threshold was "
         f"measured on, where the first steps' large updates weigh more: weak evidence (--verify tests "
         f"it)." if short else
         f", so training settles at a loss of {run.last['train_loss']:.3f} it cannot go below."),
      f"Lower the learning rate to {new_lr:g} ({how}).", {"config.optim.learning_rate": new_lr})


def rule_lr_too_low(run: Run):
  """Steps too small to move the weights early on (the update/parameter ratio), or a rate far below where the run's
  own LR range test found the loss still falling (LR_TEST_BELOW_MIN): high where the training loss was still
  falling at the end (the budget ran out before the slow rate did its work), medium otherwise."""
  if not run.rows:
    return None
  ratio = run.early_update_ratio
  lr = run.get("optim.learning_rate")
  by_ratio = ratio is not None and ratio < UPDATE_RATIO_LOW
  at_min = (run.lr_find or {}).get("lr_at_min_loss")
  below = at_min / lr if at_min and isinstance(lr, (int, float)) and lr > 0 else None
  threshold = lr_test_threshold(run.get("optim.optimizer", "adam"))
  by_test = below is not None and below >= threshold
  decayed = schedule.decayed_too_fast(run)
  if decayed and not (by_ratio or by_test):
    return _rule_decayed_too_fast(run, decayed)
  if not (by_ratio or by_test):
    return None
  new_lr, how = _lr_fix(run, 10.0)
  still = run.train_loss_fall > STILL_IMPROVING
  confidence = max(_confidence(ratio, UPDATE_RATIO_LOW, above=False, log=True) if by_ratio else 0.0,
                   _confidence(below, threshold, log=True) if by_test else 0.0)
  said = []
  if by_ratio:
    said.append(f"each step changed the weights by only {ratio:.2g} of their norm early in training (healthy: "
                f"about 3e-3)")
  if by_test:
    said.append(f"the run's LR range test (the same model, optimizer and data from a fresh start) found the loss "
                f"still falling up to {at_min:.2g}, {below:.0f}x the rate {lr:g} (runs without a rate fault: "
                f"{LR_TEST_FAULT_FREE}; threshold {threshold:g}x)")
  levelled = f"the training loss levelled off ({100 * run.train_loss_fall:.1f}% over the last third)"
  ending = (f"and the training loss was still falling ({100 * run.train_loss_fall:.1f}% over the last third of the "
            f"run) when it ended: the model learns, too slowly for this budget." if still else
            f"while {levelled} under the decayed rate (--verify trains the slower decay and the higher rate)."
            if decayed else f"while {levelled}: weaker evidence (--verify trains the higher rate).")
  raise_rate = f"Raise the learning rate to {new_lr:g} ({how})."
  options = None
  if decayed:  # the schedule too: its remedies first, the higher rate after them
    said.append(schedule.describe(decayed))
    options, slower = schedule.slower_decay_options(run, decayed)
    options.append(("higher_rate", {"config.optim.learning_rate": new_lr}))
    raise_rate = f"{slower} Or {raise_rate[0].lower()}{raise_rate[1:]}"
  high = still or (decayed is not None and decayed["severity"] == "high")
  return _finding(
      "lr_too_low", "high" if high else "medium", confidence,
      {"fired_on": [name for name, on in (("update_ratio", by_ratio), ("lr_range_test", by_test),
                                          ("schedule", decayed)) if on],
       "update_to_param_ratio_early": ratio, "threshold": UPDATE_RATIO_LOW, "learning_rate": lr,
       **({"update_ratio_less_decay": gradient_ratio(run)} if ratio is not None and decay_ratio_bound(run) else {}),
       "lr_find_loss_minimum_at": at_min, "lr_find_minimum_over_rate": below,
       "lr_find_threshold": threshold, "train_loss_fall_last_third": run.train_loss_fall,
       "train_accuracy": run.train_acc, **({"schedule": decayed} if decayed else {})},
      f"The learning rate is too low: {'; '.join(said)}, {ending}",
      raise_rate, {"config.optim.learning_rate": new_lr}, options=options)


def _rule_decayed_too_fast(run: Run, decayed: dict):
  """lr_too_low from the schedule alone (schedule.decayed_too_fast): high where the rate spent DECAYED_HIGH of the
  run's steps or more under the floor and validation gained less than GAIN_UNDER_FLOOR there, else medium; the fix
  a slower decay or a cosine schedule."""
  options, summary = schedule.slower_decay_options(run, decayed)
  stopped = (" The model stopped learning when its rate did: what it reached is the schedule's limit, not "
             "necessarily the model's." if decayed["severity"] == "high" else "")
  return _finding(
      "lr_too_low", decayed["severity"], _confidence(decayed["share_of_steps_under_floor"], schedule.DECAYED_SHARE),
      {"fired_on": ["schedule"], "schedule": decayed, "learning_rate": run.get("optim.learning_rate"),
       "train_loss_fall_last_third": run.train_loss_fall},
      f"The learning rate decays too fast: {schedule.describe(decayed)}.{stopped}", summary, options=options)


def _milder_augmentation(run: Run) -> dict:
  """Overrides that bring every augmentation stronger than the `characters` preset down to it (flips off)."""
  preset = augment_lib.PRESETS["characters"]
  a, mild = run.augment, {k: float(preset.get(k, 0.0)) for k in ("rotation_range", "width_shift_range",
                                                                 "height_shift_range", "zoom_range", "shear_range")}
  overrides = {f"config.augment.{k}": v for k, v in mild.items()
               if isinstance(getattr(a, k), (int, float)) and getattr(a, k) > v}
  if a.zoom_range != (1.0, 1.0) and max(abs(z - 1.0) for z in a.zoom_range) > mild["zoom_range"] + 1e-9:
    overrides["config.augment.zoom_range"] = mild["zoom_range"]
  overrides.update({f"config.augment.{k}": False for k in ("horizontal_flip", "vertical_flip") if getattr(a, k)})
  return overrides


def capacity_fix(run: Run) -> tuple[list[tuple[str, dict]], str, str]:
  """The underfitting fix as options (name, overrides; the first the recommendation), what to do, and why: where
  augmentation is on and the training loss was measured on the clean images, narrower augmentation; while the
  loss still fell by > TOO_SHORT over the last third, twice the epochs; and always a wider model, which
  `--verify` trains beside the first (a slow loss on a model too small also still falls: the digits' ConvNet of 1
  and 2 channels gained +0.60 points [-0.54, +1.74] from twice its 30 epochs). The wider model is a ConvNet (at
  least 32 channels a block, a 128-unit hidden layer) in place of a seed model or a ConvNet; a ResNet stays a
  ResNet, its stages twice as wide: replacing a residual network by a plain one is not the one change asked."""
  widths = run.get("model.widths") or [32, 64]
  if run.get("model.name") == "ResNet":
    wider = ("wider", {"config.model.widths": [2 * int(w) for w in widths]})
  else:
    wider = ("wider", {"config.model.name": "ConvNet", "config.model.widths": [max(32, 2 * int(w)) for w in widths],
                       "config.model.hidden_units": 128})
  milder = (_milder_augmentation(run) if run.last.get("train_eval_loss") is not None and run.augmentation_on()
            else {})
  weaker, has, changes, material = weaker_regularization(run)
  option = [("weaker_regularization", weaker)] if weaker else []
  first, after = (option, []) if material else ([], option)
  # What to do: weakening the regularisation first where it is material (else last), then the rest.
  do = lambda rest: (f"Weaken the regularisation ({changes}); or {rest[0].lower()}{rest[1:]}" if first else
                     rest + (f" Or weaken the regularisation ({changes})." if after else ""))
  held = (f" The run regularises beyond the seed's recipe ({has}): a model that cannot fit its training data may "
          f"be held back by it, and weakening it is the first thing to try." if first else
          f" The run also has {has}, whose weakening --verify tries too." if after else "")
  if milder:  # the clean training images are not fitted while the augmented ones are trained on
    return (first + [("milder_augmentation", milder), wider] + after,
            do("Narrow the augmentation to what the model can fit (the `characters` preset's strength: rotation "
               "10°, shifts and zoom 0.1, no flips), or widen the model."),
            "With augmentation this strong the model spends its capacity on transformed images and fits neither "
            "them nor the originals." + held)
  if run.train_loss_fall > TOO_SHORT:
    return (first + [("longer", {"config.num_epochs": 2 * int(run.get("num_epochs") or run.last["epoch"])}), wider]
            + after,
            do(LONGER_OR_WIDER_TEXT), "The loss was still falling: training may be too short." + held)
  return (first + [wider] + after, do(WIDER_TEXT),
          ("The loss has levelled off." if first else "The loss has levelled off: the model is too small for the task.")
          + held)


def rule_underfitting(run: Run):
  """The model does not fit its training data. Read on the training loss measured like validation's
  (`train_eval_loss`: eval mode, no augmentation) when the run logged it, which also holds with augmentation
  on; otherwise on the running training loss, and only without augmentation."""
  if not run.rows or not run.num_classes:
    return None
  measured = run.last.get("train_eval_loss")
  train_acc = run.last.get("train_eval_accuracy", run.train_acc) if measured is not None else run.train_acc
  loss_frac = (run.last["train_loss"] if measured is None else measured) / math.log(run.num_classes)
  if loss_frac <= UNDERFIT_LOSS or train_acc - run.val_acc > OVERFIT_GAP:
    return None
  if run.val_acc - train_acc > NOISE_GAP or (measured is None and run.augmentation_on()):  # training accuracy
    return None  # and loss are then measured on harder examples than validation's (label noise, augmentation)
  # Validation led the training labels at some evaluation (label_noise; a model that went on to memorise them
  # closes the lead by the end): the training loss counts the wrong labels, high whatever the model's capacity.
  if measured is not None:
    at, threshold = noise_peak(run)
    if at["val_accuracy"] - at["train_eval_accuracy"] > threshold:
      return None
  ratio = run.early_update_ratio
  if (ratio is not None and (ratio < UPDATE_RATIO_LOW or (gradient_ratio(run) > UPDATE_RATIO_HIGH
                                                           and not l2_decay_blurs_ratio(run)))
      and not short_ratio_contradicted(run)):
    return None  # the learning rate explains it
  slow = [c["name"] for c in (run.preflight or {}).get("checks", [])
          if c["name"] in ("overfit_batch", "inputs_matter") and not c.get("passed", True)]
  options, fix, why = capacity_fix(run)
  return _finding(
      "underfitting", "high" if loss_frac > 1.5 * UNDERFIT_LOSS or slow else "medium",
      min(0.95, _confidence(loss_frac, UNDERFIT_LOSS) + 0.15 * bool(slow)),
      {"train_loss_over_ln_k": loss_frac, "threshold": UNDERFIT_LOSS, "train_accuracy": train_acc,
       "train_measured_like_validation": measured is not None, "augmentation_on": run.augmentation_on(),
       "val_accuracy": run.val_acc, "train_loss_fall_last_third": run.train_loss_fall, "model": run.get("model.name"),
       "failed_preflight_checks": slow},
      f"The model does not fit even its training data: the final training loss is {loss_frac:.2f} of the "
      f"loss of guessing (ln K; healthy runs here: 0.07-0.13), with training and validation accuracy close "
      f"together ({train_acc:.3f} and {run.val_acc:.3f}). " + why
      + (f" Before training it also failed the pre-flight check(s) {', '.join(slow)}, which a model with "
         f"enough capacity passes in 100 steps." if slow else ""),
      fix, options=options)


def still_learning_measures(run: Run) -> dict | None:
  """What `still_learning` reads (runs of 2 or more evaluations): validation accuracy's gain over the last third of
  the evaluations (a fraction, and in images), one evaluation's standard error (binomial, Agresti-Coull: near 100%
  the plain estimate reads no noise; None without the validation split's size), the validation loss's fall there
  (x ln K), and whether the run ended at its best (its last evaluation the most accurate, its validation loss
  within 2% of the minimum; at the minimum itself)."""
  if (len(run.rows) < 2 or run.num_classes < 2
      or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in run.val_losses)):
    return None
  last, lowest = run.last, min(run.val_losses)
  n_val = run.split_count("validation") or 0
  return {"gain": run.late_gain, "images": run.late_gain * n_val if n_val else None,
          "standard_error": accuracy_standard_error(last["val_accuracy"], n_val) if n_val else None,
          "loss_fall": (run.early[-1]["val_loss"] - last["val_loss"]) / math.log(run.num_classes),
          "ends_at_best": last["val_accuracy"] >= run.best["val_accuracy"] and last["val_loss"] <= 1.02 * lowest,
          "ends_at_loss_minimum": last["val_loss"] <= lowest}


def still_learning(run: Run) -> dict | None:
  """The evidence that the run stopped while validation was still improving (STILL_LEARNING_*), with the severity
  it supports; or None."""
  if run.diverged or not run.trained_all_epochs():
    return None  # an interrupted run is resumed, not lengthened; one stopped early stopped gaining
  m = still_learning_measures(run)
  if m is None:
    return None
  gain, se = m["gain"], m["standard_error"]
  by_loss = m["ends_at_loss_minimum"] and m["loss_fall"] >= STILL_LEARNING_LOSS_FALL and gain > 0
  by_accuracy = None
  if (m["ends_at_best"] and se is not None and gain >= STILL_LEARNING_GAIN
      and m["images"] >= STILL_LEARNING_MIN_IMAGES):
    by_accuracy = ("high" if gain >= STILL_LEARNING_Z["high"] * se else
                   "medium" if gain >= STILL_LEARNING_Z["medium"] * se else None)
  if not (by_loss or by_accuracy):
    return None
  evidence = {"severity": "high" if by_loss or by_accuracy == "high" else "medium",
              "val_accuracy_gain_last_third": gain, "gain_threshold": STILL_LEARNING_GAIN,
              "gain_in_images": m["images"], "val_accuracy_standard_error": se,
              "val_loss_fall_last_third_over_ln_k": m["loss_fall"], "loss_fall_threshold": STILL_LEARNING_LOSS_FALL,
              "evaluations_in_last_third": len(run.late), "epochs": run.last["epoch"], "steps": run.last["step"],
              "fired_on": [name for name, on in (("val_accuracy", by_accuracy), ("val_loss", by_loss)) if on]}
  return {k: round(v, 5) if isinstance(v, float) else v for k, v in evidence.items()}


def longer_fix(run: Run) -> tuple[list[tuple[str, dict]], str]:
  """The fix for a run cut short, as options: twice the epochs, and, where batches of 128 or more leave few steps,
  about a quarter of the batch (a multiple of 32, which any device count up to 32 and the CPU's micro-batches
  divide; about four times the steps an epoch, the learning rate as it was)."""
  options = [("longer", {"config.num_epochs": 2 * int(run.get("num_epochs") or run.last["epoch"])})]
  batch = int(run.get("batch_size") or 0)
  if batch >= 128:
    options.append(("smaller_batch", {"config.batch_size": max(32, batch // 4 // 32 * 32)}))
  return options, ("Train longer (twice the epochs)" + (", or take smaller batches (more steps an epoch)"
                                                        if len(options) > 1 else "") + ".")


def rule_lr_plateau(run: Run):
  if not run.learned() or len(run.rows) < 6 or run.get("optim.schedule") != "constant":
    return None
  if run.late_gain >= PLATEAU_GAIN:
    return None
  return _finding(
      "lr_plateau", "medium", _confidence(max(PLATEAU_GAIN - run.late_gain, 1e-6), PLATEAU_GAIN / 2),
      {"schedule": "constant", "val_accuracy_gain_last_third": run.late_gain, "threshold": PLATEAU_GAIN,
       "best_val_accuracy": run.best["val_accuracy"], "best_epoch": run.best["epoch"]},
      f"The learning rate never decays, and validation accuracy gained only {100 * run.late_gain:.2f} points "
      f"over the last third of the run: at a constant step size the weights keep bouncing around a minimum "
      f"that a decaying rate would settle into.",
      "Decay the learning rate (cosine to zero over the run).", {"config.optim.schedule": "cosine"})

"""The doctor's diagnosis: a run directory in, ranked findings out (`diagnosis.json`; vocabulary in DESIGN.md).

Reads only the run directory (config.json, metrics.jsonl, audit.json, and where present augment_check.json,
preflight.json, lr_find.json, diverged.json, early_stopped.json, train_predictions.npz), so it diagnoses runs made
anywhere, by any version that wrote those files. Each rule looks at one cause and, when its evidence passes its
threshold, emits a finding: cause, severity, confidence, the evidence numbers, an explanation, and a fix as
overrides of existing config fields. The rules on training signals are in signal_rules.py (diverged, pipeline_bug,
lr_too_high, lr_too_low, underfitting, lr_plateau), generalisation_rules.py (overfitting, label_noise) and
augmentation_rules.py (harmful_augmentation), a stop that came too soon in stopping.py (underfitting), those on the
data in data_rules.py (missing_class, data_leakage, distribution_shift, class_imbalance). This module holds their
registry, the ranking, the severity by the accuracy at stake, the verdict and which finding to fix first.
"""

from __future__ import annotations

import time

from cnn_val import knn, rundir
from cnn_val.doctor.data_rules import (rule_class_imbalance, rule_data_leakage, rule_distribution_shift,
                                       rule_missing_class)
from cnn_val.doctor.finding import SEVERITIES
from cnn_val.doctor.finding import finding as _finding
from cnn_val.doctor.finding import make_fix
from cnn_val.doctor.finding import verification_result
from cnn_val.doctor.augmentation_rules import rule_harmful_augmentation
from cnn_val.doctor.run_view import Run
from cnn_val.doctor.stopping import describe as _describe_stop
from cnn_val.doctor.stopping import patience_options
from cnn_val.doctor.stopping import stopped_too_soon as _stop_evidence
from cnn_val.doctor.generalisation_rules import rule_label_noise, rule_overfitting
from cnn_val.doctor.signal_rules import (LONGER_OR_WIDER_TEXT, WIDER_TEXT, capacity_fix, longer_fix, rule_diverged,
                                         rule_lr_plateau, rule_lr_too_high, rule_lr_too_low, rule_pipeline_bug,
                                         rule_underfitting)
from cnn_val.doctor.signal_rules import still_learning as _still_learning

DIAGNOSIS_FILE = "diagnosis.json"
# The accuracy at stake: a run whose validation accuracy ends within NEAR_CHANCE_MARGIN of the majority-class
# accuracy, or within NEAR_CHANCE_SHARE of the way from it to 100% (16% on 10 balanced classes), has learned
# (almost) nothing. It is never healthy: every finding becomes high, and without any a finding says so.
NEAR_CHANCE_MARGIN = 0.05
NEAR_CHANCE_SHARE = 0.10
# The pixel reference (audit.json's `pixel_reference`, knn.py): a run whose best validation error is at least
# PIXEL_REFERENCE_RATIO of a 1-nearest-neighbour lookup's on the pixels has not learned what its data hold.
# Runs without a fault end at 0.17-0.67x the lookup's error (both datasets, augmented, BatchNorm and 25-epoch
# runs included); the models too small to fit at 0.98-1.37x (README, "The pixel reference"). Judged only where
# the lookup errs on at least PIXEL_REFERENCE_MIN_ERRORS images (a ratio of few errors is noise) and no medium
# or high finding names another cause (those explain lost accuracy themselves: a long tail, a shift, leaked
# copies, wrong labels, a label-changing augmentation, the learning rate; a low one, such as a long tail the
# minority classes' recall does not show, does not; nor does an lr_too_low that rests on the run's LR range test
# alone in a run whose steps moved the weights as a good rate's do, which a model too small also reads:
# CAPACITY_RATIO, lr_test_yields_to_capacity).
PIXEL_REFERENCE_RATIO = 0.9
PIXEL_REFERENCE_MIN_ERRORS = 25
# An early update/parameter ratio at or above this, a third of a good rate's (2.1-3.4e-3 at Adam 1e-3 and SGD 1e-2,
# both datasets), says the steps move the weights as a good rate's do: an lr_too_low from the LR range test alone is
# then weaker than a small model's evidence (ConvNets of 1 and 2 channels: 1.6-1.8e-3, their sweeps 155-205x above
# their rates, 10x the rate no help; rates 10x too low: 3.9-7.8e-4; README, "The learning rate against the run's
# own range test").
CAPACITY_RATIO = 1e-3
_CAPACITY_CAUSES = ("underfitting", "lr_plateau")


# Ranking within a severity: a run that failed outright, then causes measured directly in the data (the
# audit), then causes inferred from training signals, then the symptoms those causes also produce (a
# class imbalance or leakage shows up as a train/validation gap too; the reverse does not happen).
_TIER = {"diverged": 0, "pipeline_bug": 0, "missing_class": 1, "data_leakage": 1, "distribution_shift": 1,
         "class_imbalance": 1, "lr_too_high": 2, "lr_too_low": 2, "harmful_augmentation": 2, "label_noise": 2,
         "underfitting": 3, "overfitting": 3, "lr_plateau": 3}

RULES = (rule_diverged, rule_pipeline_bug, rule_missing_class, rule_data_leakage, rule_distribution_shift,
         rule_class_imbalance, rule_harmful_augmentation, rule_label_noise, rule_lr_too_high, rule_lr_too_low,
         rule_underfitting, rule_overfitting, rule_lr_plateau)


def majority_accuracy(run: Run) -> float | None:
  """The validation accuracy of always answering the largest validation class (the audit's class counts;
  else the pre-flight's majority check; else 1/K)."""
  counts = ((run.audit or {}).get("splits", {}).get("validation") or {}).get("class_counts")
  if counts and sum(counts):
    return max(counts) / sum(counts)
  checks = (run.preflight or {}).get("checks", [])
  value = next((c.get("value") for c in checks if c.get("name") == "majority_class"), None)
  if value is not None:
    return float(value)
  return 1 / run.num_classes if run.num_classes else None


def _at_stake(run: Run) -> dict | None:
  """Where the run ended near chance (near_chance), the numbers that say so; else None."""
  majority = majority_accuracy(run)
  if not run.rows or majority is None or run.diverged:
    return None
  margin = max(NEAR_CHANCE_MARGIN, NEAR_CHANCE_SHARE * (1 - majority))
  if run.val_acc >= majority + margin:
    return None
  return {"val_accuracy": run.val_acc, "majority_class_accuracy": majority, "margin": margin}


def near_chance(run: Run, findings: list[dict]) -> list[dict]:
  """Severity follows the accuracy at stake: when the run ends within max(NEAR_CHANCE_MARGIN,
  NEAR_CHANCE_SHARE x (1 - majority)) of the majority-class accuracy, every finding is raised to high (the
  evidence records why), and a run no rule explains gets an `underfitting` finding that says it learned
  nothing, so that it is never called healthy."""
  stake = _at_stake(run)
  if stake is None:
    return findings
  majority, margin = stake["majority_class_accuracy"], stake["margin"]
  for f in findings:
    if f["severity"] != "high":
      f["severity"] = "high"
      f["evidence"]["raised_to_high"] = stake
      f["explanation"] += (f" Raised to high: the run ends at {100 * run.val_acc:.1f}% validation accuracy, "
                           f"within {100 * margin:.1f} points of always answering the majority class "
                           f"({100 * majority:.1f}%).")
  if findings:
    return findings
  return [_finding(
      "underfitting", "high", 0.9, {**stake, "train_loss_final": run.last["train_loss"],
                                    "learning_rate": run.get("optim.learning_rate")},
      f"The run learned (almost) nothing: {100 * run.val_acc:.1f}% validation accuracy against "
      f"{100 * majority:.1f}% for always answering the majority class, and no rule names a cause from this run "
      f"alone.",
      "Find the cause by experiment: `python -m cnn_val.doctor --workdir=W --verify` trains the lever menu "
      "(the LR range test's rate, a wider and a deeper model, ...) against this run; or measure the learning "
      "rate with `python -m cnn_val.lr_find`.")]


def pixel_reference(run: Run, findings: list[dict]) -> list[dict]:
  """The CNN against a lookup on the pixels: where its best validation error is at least PIXEL_REFERENCE_RATIO of
  the 1-nearest-neighbour classifier's and no finding names another cause, the run underfits (high): an
  `underfitting` finding from the training loss gains the evidence and becomes high, or one is added with the
  underfitting rule's fix (narrower augmentation, more epochs while the loss still fell, a wider model)."""
  reference = (run.audit or {}).get("pixel_reference")
  if (not run.rows or not reference or reference.get("errors", 0) < PIXEL_REFERENCE_MIN_ERRORS
      or any(f["cause"] not in _CAPACITY_CAUSES and f["severity"] != "low" and not _rate_by_test_alone(f)
             for f in findings)):
    return findings
  lookup_error = 1.0 - reference["accuracy"]
  error = 1.0 - run.best["val_accuracy"]
  ratio = knn.error_ratio(run.best["val_accuracy"], reference)
  if ratio < PIXEL_REFERENCE_RATIO:
    return findings
  evidence = {"best_val_error": round(error, 5), "pixel_lookup_error": round(lookup_error, 5), "ratio": round(ratio, 4),
              "threshold": PIXEL_REFERENCE_RATIO, "lookup_train_examples": reference["train_examples"],
              "lookup_validation_examples": reference["validation_examples"]}
  said = (f"Its best validation error, {100 * error:.1f}%, is {ratio:.2f}x that of a 1-nearest-neighbour lookup on "
          f"the raw pixels of {reference['train_examples']:,} training images ({100 * lookup_error:.1f}% of "
          f"{reference['validation_examples']:,} validation images), which learns nothing; a CNN that learns the "
          f"shapes in its data errs far less (runs without a fault: 0.17-0.67x the lookup's error; here the "
          f"threshold is {PIXEL_REFERENCE_RATIO}x).")
  existing = next((f for f in findings if f["cause"] == "underfitting"), None)
  if existing is not None:
    existing["evidence"]["pixel_reference"] = evidence
    existing["explanation"] += " " + said
    existing["severity"] = "high"
    existing["confidence"] = max(existing["confidence"], _reference_confidence(ratio))
    return findings
  options, fix, why = capacity_fix(run)
  return findings + [_finding(
      "underfitting", "high", _reference_confidence(ratio),
      {"pixel_reference": evidence, "val_accuracy": run.val_acc, "best_val_accuracy": run.best["val_accuracy"],
       "train_loss_fall_last_third": run.train_loss_fall, "model": run.get("model.name")},
      "The model does no better than looking up the nearest training image. " + said + " " + why,
      fix, options=options)]


# Causes that slow learning themselves: a run they leave still improving at its end is theirs to explain.
_SLOW_LEARNING_CAUSES = ("diverged", "pipeline_bug", "lr_too_low", "label_noise", "harmful_augmentation")


def still_learning(run: Run, findings: list[dict]) -> list[dict]:
  """A run that trained all its epochs and stopped while validation was still improving (signal_rules.still_learning)
  underfits by training too short (high, or medium on weaker evidence): an `underfitting` finding gains the evidence
  and that severity where it is higher, and twice the epochs among its options (first on high evidence, else after
  its own recommendation); or one is added, whose options are twice the epochs and, with large batches, smaller
  ones. Not where a medium or high finding names a cause that slows learning itself (_SLOW_LEARNING_CAUSES: a failed
  run, a rate too low, wrong labels, a label-changing augmentation; an `lr_too_low` from the LR range test alone,
  which a small model also reads, does not count: `_rate_by_test_alone`), nor near chance, where the lever menu
  looks for the cause (near_chance)."""
  evidence = _still_learning(run)
  if (evidence is None or _at_stake(run) is not None
      or any(f["cause"] in _SLOW_LEARNING_CAUSES and f["severity"] != "low" and not _rate_by_test_alone(f)
             for f in findings)):
    return findings
  options, fix = longer_fix(run)
  how = " and ".join({"val_accuracy": f"validation accuracy gained {100 * run.late_gain:.2f} points, to its best at "
                                      f"the last evaluation",
                      "val_loss": f"the validation loss fell by {evidence['val_loss_fall_last_third_over_ln_k']:.2f} "
                                  f"ln K, to its lowest at the last evaluation"}[k] for k in evidence["fired_on"])
  said = (f"The run stopped while it was still learning: over its last {evidence['evaluations_in_last_third']} "
          f"evaluation(s) {how} ({evidence['steps']:,} steps in {evidence['epochs']} epochs); more training is "
          f"likely to gain more.")
  severity = evidence.pop("severity")
  existing = _underfitting_with(run, findings, "still_learning", evidence, severity, said, fix, options)
  if existing is None:
    return findings
  existing["explanation"] += " " + said
  own = _named_options(run, existing["fix"])
  summary = existing["fix"]["summary"]
  said_longer = any(name == "longer" for name, _ in own)
  lead = [o for o in own[:1] if o[0] == "weaker_regularization"]  # material regularisation (capacity_fix) stays first
  if severity == "high":  # strong evidence: training longer is the recommendation, the finding's own remedies next
    merged = lead + options + own[len(lead):]
    if lead and not said_longer:  # weakening the regularisation stays the first thing said, training longer next
      summary = f"{summary} Or {fix[0].lower()}{fix[1:]}"
    elif not said_longer:
      summary = fix + " " + summary
  else:  # weak: the finding's recommendation stands, and --verify trains training longer beside it
    merged = own + options
    summary = summary if said_longer else summary + " " + fix
  seen = set()
  merged = [(name, o) for name, o in merged if not (name in seen or seen.add(name))]
  if "smaller_batch" in dict(merged) and "smaller batches" not in summary:
    summary += " Or take smaller batches (more steps an epoch)."
  existing["fix"] = make_fix(summary, options=merged)
  return findings


def _underfitting_with(run: Run, findings: list[dict], key: str, evidence: dict, severity: str, said: str, fix: str,
                       options: list) -> dict | None:
  """Evidence that the run trained too short (`key`: still_learning, early_stop) as an `underfitting` finding: a new
  one appended to `findings` (None returned), or the one already there given the evidence, the severity where it is
  higher and the confidence that goes with it, and returned for its caller to merge the fix into."""
  confidence = 0.8 if severity == "high" else 0.6
  existing = next((f for f in findings if f["cause"] == "underfitting"), None)
  if existing is None:
    findings.append(_finding("underfitting", severity, confidence, {key: evidence, "val_accuracy": run.val_acc},
                             said, fix, options=options))
    return None
  existing["evidence"][key] = evidence
  existing["severity"] = min(existing["severity"], severity, key=SEVERITIES.index)
  existing["confidence"] = max(existing["confidence"], confidence)
  return existing


def stopped_too_soon(run: Run, findings: list[dict]) -> list[dict]:
  """A run that early stopping ended while it was still learning (stopping.stopped_too_soon) underfits by training too
  short: an `underfitting` finding (high from half the epochs untrained, or where the run ended near chance; else
  medium) whose options are more patience and none. Merged into an `underfitting` finding already there: its
  evidence and severity where higher; the patience options first on high evidence (after a material weakening of
  the regularisation, which stays first), else after the finding's own; its `longer` option goes, since a run
  trained longer with the same patience stops where this one did. Near chance, where that finding carries no fix so
  that `--verify` looks for the cause with the lever menu, the stop is said and the fix left to the menu. Applied
  after lr_test_yields_to_capacity, which reads the underfitting finding's severity from the loss alone."""
  evidence = _stop_evidence(run)
  if evidence is None:
    return findings
  options, fix = patience_options(evidence)
  said = _describe_stop(evidence)
  severity = "high" if _at_stake(run) is not None else evidence["severity"]
  evidence = {k: v for k, v in evidence.items() if k != "severity"}
  existing = _underfitting_with(run, findings, "early_stop", evidence, severity, said, fix, options)
  if existing is None:
    return findings
  if not existing["fix"].get("overrides"):
    existing["explanation"] += f" {said} {fix}"
    return findings
  existing["explanation"] += " " + said
  own = [(name, o) for name, o in _named_options(run, existing["fix"]) if set(o) != {"config.num_epochs"}]
  summary = existing["fix"]["summary"]
  lower = lambda text: text[0].lower() + text[1:]  # as capacity_fix's `do` writes it after another option
  for longer, without in ((LONGER_OR_WIDER_TEXT, WIDER_TEXT), (lower(LONGER_OR_WIDER_TEXT), lower(WIDER_TEXT))):
    summary = summary.replace(longer, without)
  lead = [o for o in own[:1] if o[0] == "weaker_regularization"]
  merged = lead + options + own[len(lead):] if severity == "high" else own + options
  summary = f"{summary} {fix}" if lead or merged[0] != options[0] else f"{fix} {summary}"
  existing["fix"] = make_fix(summary, options=merged)
  return findings


def _named_options(run: Run, fix: dict) -> list[tuple[str, dict]]:
  """A finding's fix as named options: its `options`, or its one change named as capacity_fix names it (a fix of
  one option keeps only the overrides); none where it has no overrides."""
  if fix.get("options"):
    return [(o["name"], o["overrides"]) for o in fix["options"]]
  if not fix.get("overrides"):
    return []
  names = [name for name, o in capacity_fix(run)[0] if o == fix["overrides"]]
  return [(names[0] if names else "fix", fix["overrides"])]


def _rate_by_test_alone(finding: dict) -> bool:
  """An `lr_too_low` finding from the run's LR range test alone, in a run whose early steps moved the weights at a
  third or more of a good rate's (CAPACITY_RATIO): the sweep's reach may then be a small model's tolerance of high
  rates rather than a slow rate."""
  evidence = finding["evidence"]  # the ratio less what a decoupled weight decay alone makes, where it has one
  ratio = evidence.get("update_ratio_less_decay", evidence.get("update_to_param_ratio_early"))
  return (finding["cause"] == "lr_too_low" and finding["evidence"].get("fired_on") == ["lr_range_test"]
          and ratio is not None and ratio >= CAPACITY_RATIO)


def lr_test_yields_to_capacity(run: Run, findings: list[dict]) -> list[dict]:
  """An `lr_too_low` finding that rests on the run's LR range test alone (`_rate_by_test_alone`) is medium where
  a high `underfitting` finding stands, from the training loss or the pixel reference (which such a finding does
  not block): a model too small takes far higher rates in the sweep without gaining from them (faults/underfitting.py's
  ConvNet of 1 and 2 channels, seed 2: the sweep's minimum 155x its rate; trained at 10x the rate, +0.10 points; the
  digits' at 62-205x), so the capacity ranks first and `--verify` trains both fixes. Not in a run near chance, where
  every finding is high (near_chance)."""
  low = next((f for f in findings if f["cause"] == "lr_too_low"), None)
  if (low is None or not _rate_by_test_alone(low) or low["severity"] != "high" or _at_stake(run) is not None
      or not any(f["cause"] == "underfitting" and f["severity"] == "high"
                 and {"train_loss_over_ln_k", "pixel_reference"} & f["evidence"].keys() for f in findings)):
    return findings
  low["severity"] = "medium"
  low["explanation"] += (" Medium: the model does not fit its training data either (underfitting), and a model "
                         "too small takes higher rates in the sweep without gaining from them.")
  return findings


def _reference_confidence(ratio: float) -> float:
  return round(min(0.9, 0.6 + 0.3 * (ratio - PIXEL_REFERENCE_RATIO) / PIXEL_REFERENCE_RATIO), 3)


def diagnose(workdir: str) -> dict:
  """The diagnosis of the run in `workdir`, from its files alone."""
  start = time.perf_counter()
  run = Run(workdir)
  findings = stopped_too_soon(run, lr_test_yields_to_capacity(run, still_learning(run, pixel_reference(
      run, near_chance(run, [f for f in (rule(run) for rule in RULES) if f is not None])))))
  findings.sort(key=lambda f: (SEVERITIES.index(f["severity"]), _TIER[f["cause"]], -f["confidence"]))
  summary = {}
  if run.rows:
    summary = {"epochs": run.last["epoch"], "val_accuracy": run.val_acc, "train_accuracy": run.train_acc,
               "best_val_accuracy": run.best["val_accuracy"], "best_epoch": run.best["epoch"],
               "test_accuracy": run.last.get("test_accuracy"),
               "stopped_early": rundir.read_json(workdir, rundir.EARLY_STOP_FILE)}
  return {"verdict": "problems_found" if any(f["severity"] == "high" for f in findings) else "healthy",
          "findings": findings, "fix_first": fix_first(findings), "run": summary,
          "seconds": round(time.perf_counter() - start, 3)}


_TIER_WHY = {0: "the run failed outright", 1: "a cause measured in the data itself",
             2: "a cause read from the training signals", 3: "a symptom other causes also produce"}


def fix_first(findings: list[dict]) -> dict | None:
  """Of several findings (a compound fault), the one to fix first: the top-ranked one (severity, then root
  causes measured in the data before causes inferred from training, before the symptoms they produce)."""
  if not findings:
    return None
  top = findings[0]
  return {"cause": top["cause"], "why": f"{top['severity']} severity; {_TIER_WHY[_TIER[top['cause']]]}"}


def summary(diagnosis: dict) -> str:
  """One line: the verdict and the ranked findings, e.g. 'problems_found: data_leakage (high, 0.95)'."""
  def one(f):
    v = f.get("verified")
    proof = "" if not v else f", {verification_result(v) or 'unverified'} {100 * (v['delta'] or 0):+.2f} pts"
    return f"{f['cause']} ({f['severity']}, {f['confidence']:.2f}{proof})"
  findings = ", ".join(one(f) for f in diagnosis["findings"])
  return f"{diagnosis['verdict']}: {findings or 'no findings'}"

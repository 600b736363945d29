"""Judging the doctor's experiments: a verify sweep's aggregate table read into the findings (each fix, each
option and each lever against the baseline on the same seeds: confirmed, inconclusive or refuted; what it won back
against a reference), the follow-up against the arm it extends, and the ranking and verdict that follow
(experiments.py trains the arms; its docstring states the rules).
"""

from __future__ import annotations

import glob
import os

from cnn_val import ablate
from cnn_val.doctor.finding import verification_result
from cnn_val.doctor.levers import lever_finding
from cnn_val.doctor.rules import fix_first

VERIFY_DIR = "verify"
HIGH_GAIN = 0.01  # a confirmed gain of this much validation accuracy (1 point) or more is a high finding
# A confirmed gain counts against `healthy` when it exceeds this many baseline seed standard deviations: the
# seeds' noise, what reseeding alone moves the metric by. (It was 2 until a confirmed +0.98 points from a wider
# model, 0.58 of seed spread, left a model at 1/8 width on MNIST digits `healthy`; of the 18 verified runs on
# both datasets that is the one verdict the change moves: README, "On a second dataset".)
NOISE_MULTIPLE = 1.0


def metric_of(cause: str) -> tuple[str, bool]:
  """(metric key in ablate.METRICS, higher is better) on which a fix for `cause` is judged."""
  return ("val_minus_test_accuracy", False) if cause == "data_leakage" else ("final_val_accuracy", True)


def _reference_mean(reference: str | None, metric: str):
  """Mean `metric` over finished run directories matched by `reference` (a glob, or a sweep's runs tree)."""
  if not reference:
    return None
  dirs = sorted(d for d in glob.glob(reference) if os.path.isdir(d))
  values = [ablate.read_run(d)[metric] for d in dirs if ablate.run_status(d) == "finished"]
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def _verified(table_arm: dict, base_arm: dict, metric: str, higher: bool, out_rel: str, reference: float | None,
              applied: bool) -> dict:
  diff = table_arm[f"{metric}_vs_baseline"]
  sign = 1.0 if higher else -1.0
  if applied:  # the arm removed the fix: what the fix bought is baseline - arm
    sign = -sign
  fixed, base = (base_arm[metric], table_arm[metric]) if applied else (table_arm[metric], base_arm[metric])
  gain = None if diff["mean"] is None else sign * diff["mean"]
  ci = None if not diff["ci95"] else sorted(sign * x for x in diff["ci95"])
  confirmed = bool(ci and ci[0] > 0)
  out = {"metric": metric, "higher_is_better": higher, "arm": table_arm["arm"], "seeds": diff["n"],
         "baseline": {"mean": base["mean"], "std": base["std"]}, "fixed": {"mean": fixed["mean"], "std": fixed["std"]},
         "delta": gain, "ci95": ci, "p_value": diff["p_value"], "confirmed": confirmed,
         "runs": f"{out_rel}/runs/{table_arm['arm']}", "applied": applied}
  if reference is not None and base["mean"] is not None and gain is not None:
    lost = (1.0 if higher else -1.0) * (reference - base["mean"])  # what the fault cost against the reference
    out["reference"] = reference
    out["recovered"] = gain / lost if lost > 0 else None  # the paired gain, as a share of that
  return out


def read_fixes(fixes, arms: dict, base: dict | None, reference) -> None:
  """Fills each tried finding's `verified` from its arm, or, for a fix with options, from the option the
  experiment favours (confirmed first, then by mean gain): the finding's fix becomes that option, and
  `verified.options` records every option's result."""
  by_finding = {}
  for arm, finding, applied, option in fixes:
    by_finding.setdefault(id(finding), (finding, []))[1].append((arm, applied, option))
  for finding, tried in by_finding.values():
    metric, higher = metric_of(finding["cause"])
    results = []
    for arm, applied, option in tried:
      if arm.name in arms and base and arms[arm.name].get(f"{metric}_vs_baseline", {}).get("n"):
        verified = _verified(arms[arm.name], base, metric, higher, VERIFY_DIR, _reference_mean(reference, metric),
                             applied)
        verified["overrides"] = dict(arm.overrides)
        results.append((option, verified))
    applied = tried[0][1]
    if applied:
      finding["fix"]["applied"] = True
      finding["fix"]["summary"] = "Already applied in this config. " + finding["fix"]["summary"]
    if not results:
      continue
    option, best = max(results, key=lambda r: (r[1]["confirmed"], r[1]["delta"] if r[1]["delta"] is not None
                                                                  else float("-inf")))
    finding["verified"] = best
    if len(tried) > 1:
      best["option"] = option
      best["options"] = [{"option": o, **v} for o, v in results]  # copies, made before this key exists
      finding["fix"]["overrides"] = {f"config.{k}": v for k, v in best["overrides"].items()}
      finding["fix"]["summary"] = (f"{finding['fix']['summary']} Of the {len(results)} options tried, "
                                   f"`{option}` did best ({100 * best['delta']:+.2f} points).")


def read_levers(menu, arms: dict, base: dict | None, reference, levers: list, findings: list,
                 follow_ups: dict | None = None) -> list[tuple[ablate.Arm, str, dict]]:
  """Judges each lever arm against the baseline: records it in `levers`, adds a finding to `findings` when
  it is confirmed, and returns the confirmed ones as (arm, cause, verified). A follow-up arm (`follow_ups`, by
  name: levers.FollowUp) is judged against the confirmed arm it extends too, on the same seeds
  (`verified.vs_parent`)."""
  confirmed = []
  for arm, cause in menu:
    entry = arms.get(arm.name)
    if not entry or not base or not entry["final_val_accuracy_vs_baseline"]["n"]:
      continue
    verified = _verified(entry, base, "final_val_accuracy", True, VERIFY_DIR,
                         _reference_mean(reference, "final_val_accuracy"), False)
    verified["overrides"] = dict(arm.overrides)
    follow = (follow_ups or {}).get(arm.name)
    parent = follow and arms.get(follow.parent)
    against = parent and versus(entry, parent)
    if against:
      verified["vs_parent"] = against
    note = follow and follow.why
    levers.append({"lever": arm.name, "cause": cause, **({"follow_up": note} if note else {}), **verified})
    if not verified["confirmed"]:
      continue
    confirmed.append((arm, cause, verified))
    findings.append(lever_finding(arm, cause, verified, note, HIGH_GAIN))
  return confirmed


def versus(entry: dict, parent: dict) -> dict | None:
  """A follow-up arm against the arm it extends, on the seeds both finished: the paired difference of final
  validation accuracy (confirmed = its 95% CI above 0) and the ratio of their mean wall times per run; None
  with fewer than 2 such seeds."""
  diff = ablate.paired_difference(entry["final_val_accuracy_values"], parent["final_val_accuracy_values"])
  if diff["n"] < 2:
    return None
  mine, theirs = (entry.get("seconds") or {}).get("mean"), (parent.get("seconds") or {}).get("mean")
  return {"arm": parent["arm"], "seeds": diff["n"], "delta": diff["mean"], "ci95": diff["ci95"],
          "p_value": diff["p_value"], "confirmed": bool(diff["ci95"] and diff["ci95"][0] > 0),
          "seconds_ratio": mine / theirs if mine and theirs else None}


def _fix_first_why(top: dict) -> str:
  gain = 100 * top["verified"]["delta"]
  if top["verified"].get("predicted"):
    return (f"the learning curve predicts {gain:+.2f} points from twice the data, and no change to the config "
            f"was confirmed")
  why = f"its fix is confirmed by experiment, the largest verified gain: {gain:+.2f} points"
  versus = top["verified"].get("vs_parent")
  if versus and not versus["confirmed"]:  # the gain is real, the step beyond the arm it builds on is not shown
    why += (f"; but not beyond `{versus['arm']}`, which it builds on, on the same seeds "
            f"({100 * versus['delta']:+.2f} points): that simpler change is within the seeds' noise of it")
  return why


def state(finding: dict) -> str:
  """confirmed, inconclusive or refuted (finding.verification_result), or unverified (not tried, or too few
  seeds finished for a CI)."""
  return verification_result(finding.get("verified")) or "unverified"


def _beyond_noise(verified: dict) -> bool:
  """The gain exceeds NOISE_MULTIPLE x the baseline's standard deviation over the same seeds (same metric)."""
  # (The paired CI has already judged the gain real; this asks that it be as large as reseeding alone moves it.)
  return verified["delta"] > NOISE_MULTIPLE * (verified["baseline"]["std"] or 0.0)


def rank(diagnosis: dict, findings: list[dict], levers: list[dict], error: str | None, incomplete: list) -> dict:
  confirmed = sorted((f for f in findings if state(f) == "confirmed"),  # measured gains before predicted ones
                     key=lambda f: (bool(f["verified"].get("predicted")), -f["verified"]["delta"]))
  unverified = [f for f in findings if state(f) in ("unverified", "inconclusive")]
  refuted = [f for f in findings if state(f) == "refuted"]
  live = [f for f in findings if not f["fix"].get("applied")]  # an applied fix's problem is already handled
  problems = (any(state(f) == "confirmed" and _beyond_noise(f["verified"]) for f in live)
              or any(f["severity"] == "high" and state(f) != "refuted" for f in live))
  out = dict(diagnosis)
  out["findings"] = confirmed + unverified + refuted
  out["fix_first"] = fix_first(out["findings"])
  if confirmed:
    out["fix_first"] = {"cause": confirmed[0]["cause"], "why": _fix_first_why(confirmed[0])}
  out["verdict"] = "problems_found" if problems else "healthy"
  out["verification"] = {
      "dir": VERIFY_DIR, "confirmed": len(confirmed), "refuted": len(refuted),
      "inconclusive": sum(state(f) == "inconclusive" for f in findings), "levers": levers,
      "rule": (f"problems_found when a confirmed change (not one already applied) gains more than "
               f"{'' if NOISE_MULTIPLE == 1 else f'{NOISE_MULTIPLE:g}x '}the baseline's standard deviation over "
               f"the same seeds (the seeds' noise), or a high finding "
               f"was not refuted; confirmed = the paired 95% CI of the gain above 0, refuted = no gain on "
               f"average, inconclusive = a positive mean gain whose CI reaches 0"),
      "incomplete": error, "unfinished_runs": incomplete}
  return out

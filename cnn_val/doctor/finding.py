"""A finding, the unit of the doctor's diagnosis: the cause vocabulary (DESIGN.md), the severities, and the
confidence scale every rule shares (0.5 at its threshold, towards 0.95 as the evidence passes it)."""

from __future__ import annotations

import math

SEVERITIES = ("high", "medium", "low")
CAUSES = ("overfitting", "underfitting", "lr_too_high", "lr_too_low", "lr_plateau", "diverged",
          "class_imbalance", "distribution_shift", "harmful_augmentation", "label_noise", "data_leakage",
          "pipeline_bug", "missing_class")


def confidence(value: float, threshold: float, *, above: bool = True, log: bool = False) -> float:
  """0.5 at the threshold, towards 0.95 as the evidence passes it (by ratio, or by decades with log)."""
  if log:
    excess = (math.log10(value) - math.log10(threshold)) * (1 if above else -1)
  else:
    excess = (value / threshold - 1.0) if above else (threshold / max(value, 1e-12) - 1.0)
  return round(float(min(0.95, 0.5 + 0.45 * math.tanh(max(excess, 0.0)))), 3)


def finding(cause, severity, confidence, evidence, explanation, summary, overrides=None) -> dict:
  assert cause in CAUSES and severity in SEVERITIES
  return {"cause": cause, "severity": severity, "confidence": confidence,
          "evidence": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in evidence.items()},
          "explanation": explanation, "fix": {"summary": summary, "overrides": overrides or {}},
          "verified": None}



def verification_result(verified: dict | None) -> str | None:
  """What an experiment says of a fix (`verified`, oriented so that a positive `delta` is better):
  `confirmed` (the paired 95% CI of the gain lies above 0), `inconclusive` (a positive mean gain whose CI
  reaches 0: more seeds would tell), `refuted` (no gain on average), or None (not tried, or too few seeds for
  a CI). Only `refuted` takes a finding's cause out of the verdict: a fix not shown to help leaves the
  single-run evidence standing."""
  if not verified or not verified.get("ci95"):
    return None
  if verified["confirmed"]:
    return "confirmed"
  return "inconclusive" if (verified.get("delta") or 0.0) > 0 else "refuted"

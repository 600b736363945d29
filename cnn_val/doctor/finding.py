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


# Weight decay a fix or a lever adds: decoupled, multiplied by the learning rate like AdamW's; 1e-2 is
# PyTorch's AdamW default (at Adam 1e-3 it shrinks the weights by ~1e-5 per step).
WEIGHT_DECAY = 1e-2
# The generalized cross-entropy's q (config.gce_q) where the doctor trains on it for noisy labels: the
# label_noise finding's `robust` option and the follow-up `robust_loss`; Zhang and Sabuncu's choice for uniform and
# class-dependent noise alike.
ROBUST_GCE_Q = 0.7


def finding(cause, severity, confidence, evidence, explanation, summary, overrides=None, options=None) -> dict:
  """options: a cause's alternative remedies, each one change, as [(name, overrides), ...] with the first the
  recommendation before any experiment (`overrides` is then that one's). `doctor --verify` trains each as an
  arm and keeps the one the experiment favours (experiments.verify), so that a remedy the data punishes (an
  augmentation that costs more than the overfitting it cures) is not sold in a bundle with one that works."""
  assert cause in CAUSES and severity in SEVERITIES
  return {"cause": cause, "severity": severity, "confidence": confidence,
          "evidence": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in evidence.items()},
          "explanation": explanation, "fix": make_fix(summary, overrides, options), "verified": None}


def make_fix(summary: str, overrides: dict | None = None, options=None) -> dict:
  """A finding's `fix`: what to do, and its overrides (the first option's, where options are given)."""
  options = [(name, dict(o)) for name, o in (options or []) if o]
  fix = {"summary": summary, "overrides": dict(options[0][1]) if options else (overrides or {})}
  if len(options) > 1:
    fix["options"] = [{"name": name, "overrides": o} for name, o in options]
  return fix



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

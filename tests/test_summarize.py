"""launch/summarize.py: the tables of run directories, as fault sweeps (OUT/<name>/seed_K) and ablation sweeps
(SWEEP/runs/<arm>/seedK) lay them out."""

import json
import os

from launch import summarize


def _run(path, val_acc, cause=None):
  os.makedirs(path)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"epoch": 1, "val_accuracy": val_acc, "test_accuracy": val_acc - 0.01}) + "\n")
  findings = [{"cause": cause, "severity": "high", "confidence": 0.9}] if cause else []
  with open(os.path.join(path, "diagnosis.json"), "w") as f:
    json.dump({"verdict": "problems_found" if cause else "healthy", "findings": findings}, f)


def test_both_layouts_and_nothing_else(tmp_path):
  _run(tmp_path / "faults" / "pair_noise" / "seed_0", 0.82, "label_noise")
  _run(tmp_path / "faults" / "pair_noise" / "seed_1", 0.84, "label_noise")
  _run(tmp_path / "sweep" / "runs" / "healthy" / "seed0", 0.97)
  _run(tmp_path / "sweep" / "runs" / "healthy" / "seed1", 0.98)
  _run(tmp_path / "sweep" / "runs" / "healthy" / "seedling", 0.10)  # not a seed's folder
  faults = summarize.accuracy_table(str(tmp_path / "faults"))
  assert "| pair_noise | 2 | 83.00 ± 1.41% |" in faults
  doctor = summarize.doctor_table(str(tmp_path / "faults"))
  assert "label_noise (high) x2" in doctor and "problems_found x2" in doctor
  sweep = summarize.accuracy_table(str(tmp_path / "sweep" / "runs"))
  assert "| healthy | 2 | 97.50 ± 0.71% |" in sweep
  assert "healthy x2" in summarize.doctor_table(str(tmp_path / "sweep" / "runs"))

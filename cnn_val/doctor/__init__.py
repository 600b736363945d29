"""The doctor: reads a run directory, names what limits it, and (with `verify`) proves the fix.

    from cnn_val import doctor
    diagnosis = doctor.examine("runs/default")                 # rules on the run's own files
    diagnosis = doctor.examine("runs/default", verify=True)    # + experiments through the ablation engine

Modules: `rules` (the single-run rules and their thresholds), `run_view` (a run directory as the rules read
it), `experiments` (fixes and levers trained against the run's own config, over seeds, into W/verify/),
`levers` (the lever menu and its follow-up), `learning_curve` (the run on less of its data), `report`
(report.md and plots/). It reads run directories and launches runs through `cnn_val.ablate`;
nothing here imports the training loop.
"""

from __future__ import annotations

from absl import logging

from cnn_val import audit as audit_lib
from cnn_val import rundir
from cnn_val.doctor.rules import DIAGNOSIS_FILE, diagnose, summary

__all__ = ["DIAGNOSIS_FILE", "add_pixel_reference", "audit_run", "check_augmentation", "diagnose", "examine",
           "summary"]


def _run_data(workdir: str):
  """The run's splits as its config.json describes them (`loading.load_data`: after its fault scenario)."""
  from cnn_val import ablate  # pylint: disable=import-outside-toplevel
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel  (the data sources)
  return loading.load_data(ablate.stored_config(workdir))


def audit_run(workdir: str) -> dict:
  """Recomputes audit.json for a run from its config.json (reads the data: the one-time pass)."""
  splits, arrays = _run_data(workdir)
  report = audit_lib.audit(arrays, splits.num_classes, splits.class_names)
  rundir.write_json(workdir, rundir.AUDIT_FILE, report)
  return report


def add_pixel_reference(workdir: str) -> None:
  """Adds the pixel reference (knn.reference) to an audit.json written before the audit measured it; where it
  cannot be computed (the run's data is elsewhere) the run is diagnosed without it, with a warning."""
  report = rundir.read_json(workdir, rundir.AUDIT_FILE)
  if report is None or "pixel_reference" in report:
    return
  from cnn_val import knn  # pylint: disable=import-outside-toplevel
  try:
    splits, arrays = _run_data(workdir)
    report["pixel_reference"] = knn.reference(arrays["train"], arrays["validation"], splits.num_classes)
  except Exception as e:  # pylint: disable=broad-except  (optional evidence: the data may be elsewhere)
    logging.warning("The pixel reference of %s could not be computed (%s: %s); diagnosed without it. Where the "
                    "run's data can be read, `python -m cnn_val.doctor --workdir=%s --reaudit` adds it.",
                    workdir, type(e).__name__, e, workdir)
    return
  rundir.write_json(workdir, rundir.AUDIT_FILE, report)


def check_augmentation(workdir: str) -> dict | None:
  """Writes augment_check.json for a run whose augmentation turns on a geometric transform (a run from before
  the check, or `--reaudit`); where it cannot be computed (the run's data is elsewhere) the run is diagnosed
  without it, with a warning."""
  from cnn_val import augment_check  # pylint: disable=import-outside-toplevel  (JAX, for the affine copies)
  try:
    return augment_check.write_for_run(workdir)
  except Exception as e:  # pylint: disable=broad-except  (optional evidence: the data may be elsewhere)
    logging.warning("The augmentation check of %s could not be computed (%s: %s); diagnosed without it. Where "
                    "the run's data can be read, `python -m cnn_val.augment_check --workdir=%s` writes it.",
                    workdir, type(e).__name__, e, workdir)
    return None


def examine(workdir: str, *, reaudit: bool = False, verify: bool = False, **verify_options) -> dict:
  """The doctor: (re)audits if asked or missing (the augmentation check too), diagnoses, optionally verifies
  the fixes by experiment (`experiments.verify`, options passed on), and writes diagnosis.json, report.md and
  plots/."""
  from cnn_val.doctor import report  # pylint: disable=import-outside-toplevel  (matplotlib)
  if rundir.read_json(workdir, rundir.CONFIG_FILE) is None:
    raise FileNotFoundError(f"{workdir} has no {rundir.CONFIG_FILE}: it is not a cnn_val run directory.")
  if not rundir.read_metrics(workdir) and rundir.read_json(workdir, rundir.DIVERGED_FILE) is None:
    raise ValueError(f"{workdir} has not been evaluated yet ({rundir.METRICS_FILE} holds no epoch): there is "
                     f"nothing to diagnose. Train it first (the same training command resumes it); the doctor "
                     f"wrote nothing.")
  if reaudit or rundir.read_json(workdir, rundir.AUDIT_FILE) is None:
    audit_run(workdir)
  add_pixel_reference(workdir)  # an audit from before the reference
  if reaudit or rundir.read_json(workdir, rundir.AUGMENT_CHECK_FILE) is None:
    check_augmentation(workdir)
  diagnosis = diagnose(workdir)
  if any("likely_wrong_labels" in f["evidence"] for f in diagnosis["findings"]):
    from cnn_val.doctor.label_check import write_flagged  # pylint: disable=import-outside-toplevel
    write_flagged(workdir)  # the label_noise fixes' files (label_issues.json, noise_transition.json)
  if verify:
    from cnn_val.doctor import experiments  # pylint: disable=import-outside-toplevel
    diagnosis = experiments.verify(workdir, diagnosis, **verify_options)
  rundir.write_json(workdir, DIAGNOSIS_FILE, diagnosis)
  report.write_report(workdir, diagnosis)
  return diagnosis

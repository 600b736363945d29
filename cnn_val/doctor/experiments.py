"""The doctor's experiments: each fix, and when nothing explains the run a menu of the seed's levers, trained
against the run's own config over several seeds (through `cnn_val.ablate`, into `W/verify/`), compared with
the baseline on the same seeds.

    diagnosis = experiments.verify("runs/default", rules.diagnose("runs/default"), seeds=3)

The lever menu and the follow-up's arms live in levers.py, the learning curve in learning_curve.py; this
module trains them with the fixes, and judging.py reads the results into the findings by the rules below.

What it decides, and by which rule:
- A finding's fix is **confirmed** when the paired 95% CI of (fix - baseline) on the same seeds lies above 0
  (below 0 for a metric where lower is better), **inconclusive** when its mean gain is positive but the CI
  reaches 0, **refuted** when it gains nothing on average, and stays **unverified** when fewer than 2 seeds
  finished; confirmed findings rank first by their verified gain, refuted ones last, and the report says
  which is which.
- Each cause is judged on the metric its fix should move: validation accuracy at the last evaluation,
  except `data_leakage`, whose fix makes validation honest rather than higher: validation minus test
  accuracy, lower is better.
- A lever from the menu that is confirmed becomes a finding of the cause it tests (a wider or deeper model:
  `underfitting`, and so is BatchNorm after each conv, which makes the same model fit better, and the whole budget
  for a run that early stopping ended; dropout, weight
  decay, an augmentation preset: `overfitting`; a cosine schedule:
  `lr_plateau`; the LR range test's rate: `lr_too_high`/`lr_too_low`; an augmentation turned off:
  `harmful_augmentation`), with severity `high` when it gains >= 1 point, else `medium`. Every lever tried
  is recorded (`verification.levers`), confirmed or not.
- When every fix tried is refuted (`explore='auto'`), the menu runs as a stage of its own after them: the
  findings explained nothing that an experiment could win back, so the levers get their turn.
- A second stage follows the menu (`follow_up_arms`, within what --max_runs and --budget_minutes leave): a
  confirmed wider model widened once more, confirmed deeper blocks deepened once more and given BatchNorm after
  each conv (`deeper_blocks_bn`, where the run has none), a confirmed longer training
  (a fix that changes the epochs alone, e.g. a run cut short) twice as long again where most of its runs were still
  learning when they stopped (`signal_rules.still_learning` on each), a confirmed weaker regularisation weaker
  again (`regularisation.weaker_again`), a confirmed regularisation (the overfitting finding's fix, or the menu
  regulariser that gained most) with another conv in each block, with and without BatchNorm after each conv
  (`regularised_deeper`, `regularised_deeper_bn`), a confirmed label fix trained on the generalized cross-entropy
  (`robust_loss`, config.gce_q), and all confirmed levers and fixes together (an arm whose model the run's
  images cannot hold is left out, and the log says so); a confirmed one is a finding like any lever, so the
  largest verified gain, single lever or combination, ranks first; each is also judged against the confirmed arm
  it builds on (`verified.vs_parent`, the paired difference on the same seeds, and the ratio of wall time a run),
  which its explanation and the report state: whether the step beyond that arm is itself confirmed, within the
  seeds' noise of it, or below it.
- The verdict is `problems_found` when a confirmed change gains more than the noise of the seeds (its mean
  gain exceeds the baseline's standard deviation of the same metric over the same seeds), or when a
  high finding was not refuted (an inconclusive fix leaves its cause standing); otherwise `healthy`. Findings
  whose fix is already applied do not count.
- A fix with options (`fix.options`: e.g. overfitting's dropout, weight decay and augmentation) trains one
  arm per option; the finding keeps the option the experiment favours (confirmed first, then by mean gain)
  and records every option's result (`verified.options`).
- With an `overfitting` finding (or `learning_curve='always'`) the run's config also trains on 1/4 and 1/2
  of its training data for the same number of steps (learning_curve.py): a confirmed predicted gain from
  twice the data becomes a finding (`evidence.lever='more_data'`), ranked after the measured changes.
- A fix already in the config is not run again: the finding says it is applied, and the experiment runs
  the config *without* it (the field back at configs/default.py's value) to show what it bought.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from typing import Callable, Sequence

from cnn_val import ablate, rundir
from cnn_val.doctor.judging import HIGH_GAIN, VERIFY_DIR, rank, read_fixes, read_levers, state
from cnn_val.doctor.learning_curve import arms as curve_arms_of
from cnn_val.doctor.learning_curve import finding as curve_finding
from cnn_val.doctor.learning_curve import read as read_curve
from cnn_val.doctor.levers import (FOLLOW_UP_LEVERS, LEVERS, ensure_lr_range_test, follow_up_arms, menu_arms,
                                   unbuildable)
from cnn_val.doctor.run_view import Run
from cnn_val.doctor.signal_rules import still_learning

BASELINE_ARM = "baseline"


def _same(a, b) -> bool:
  norm = lambda v: list(v) if isinstance(v, tuple) else v  # JSON has lists where configs have tuples
  return norm(a) == norm(b)


def _defaults() -> dict:
  from cnn_val.configs import default  # pylint: disable=import-outside-toplevel
  return rundir.config_to_dict(default.get_config())


def fix_arms(run: Run, findings: list[dict], max_fixes: int) -> list[tuple[ablate.Arm, dict, bool, str | None]]:
  """(arm, finding, applied, option) for the top `max_fixes` findings that carry a fix: one arm per fix, or
  per option of a fix that has several (`fix.options`, named `<cause>_<option>`). A fix (or an option) whose
  every field already has its value in the config is `applied`: its arm then removes it (fields back at the
  default config's values), and the finding's other options are not tried: the config has its remedy."""
  out, names, tried = [], set(), 0
  defaults = None
  for finding in findings:
    options = finding["fix"].get("options") or [{"name": None, "overrides": finding["fix"].get("overrides") or {}}]
    options = [(o["name"], {ablate.strip_prefix(k): v for k, v in o["overrides"].items()}) for o in options]
    options = [(name, o) for name, o in options if o]
    if not options or tried >= max_fixes:
      continue
    pending = [(name, o, {k: v for k, v in o.items() if not _same(run.get(k), v)}) for name, o in options]
    applied = [(name, o) for name, o, left in pending if not left]
    if applied:
      name, overrides = applied[0]
      defaults = defaults if defaults is not None else Run.from_config(_defaults())
      arms = [(name, {k: defaults.get(k) for k in overrides if not _same(defaults.get(k), run.get(k))}, True)]
    else:
      arms = [(name, left, False) for name, _, left in pending]
    arms = [(option, o, is_applied) for option, o, is_applied in arms if o]
    if not arms:
      continue
    tried += 1
    for option, overrides, is_applied in arms:
      name = ("without_" if is_applied else "") + finding["cause"] + (f"_{option}" if len(options) > 1 else "")
      while name in names:
        name += "_"
      names.add(name)
      out.append((ablate.Arm(name, overrides), finding, is_applied, option if len(options) > 1 else None))
  return out


def _reuse_run(workdir: str, out: str, seed: int) -> None:
  """The finished run itself is the baseline of its own seed (its config is the sweep's base): its files,
  not its checkpoints, are copied so that the sweep never trains it again."""
  target = ablate.run_dir(out, BASELINE_ARM, seed)
  if ablate.run_status(target) != "missing" or ablate.run_status(workdir) != "finished":
    return
  os.makedirs(target)
  for name in (rundir.CONFIG_FILE, rundir.METRICS_FILE, rundir.AUDIT_FILE, rundir.PREFLIGHT_FILE,
               rundir.EARLY_STOP_FILE):  # a run that early stopping ended is finished by that file
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copy2(os.path.join(workdir, name), target)


def verify(workdir: str, diagnosis: dict, *, seeds: int = 3, parallel: int = 1, population: str = "auto",
           budget_minutes: float = 0.0,
           max_runs: int = 0, max_fixes: int = 2, explore: str = "auto", reference: str | None = None,
           levers: Sequence[str] | None = None, follow_up: bool = True, learning_curve: str = "auto",
           log: Callable[[str], None] = print) -> dict:
  """Runs the experiments for `diagnosis` (from rules.diagnose) and returns it with `verified` filled,
  menu findings added, the findings re-ranked and the verdict read from the experiments.

  explore: 'auto' (the menu when no finding carries a fix, or the verdict was healthy, and, as a second
    stage, when every fix tried was refuted: the findings then explain nothing), 'always', 'never'.
  reference: run directories (a glob) of a healthy reference, for the share of the loss a fix recovers.
  levers: when exploring, only these menu arms (names as menu_arms gives them, e.g. ['wider', 'cosine']), and
    of the follow-up only the arms it names ('wider_x2', 'deeper_blocks_x2', 'deeper_blocks_bn', 'longer_x2',
    'weaker_x2', 'regularised_deeper', 'regularised_deeper_bn', 'robust_loss', 'combined'), to bound the cost;
    None = everything.
  follow_up: after the menu, a second stage on what was confirmed (`follow_up_arms`: the wider model widened
    again, the deeper blocks deepened again and normalised, a longer training still learning lengthened again, a weaker
    regularisation weakened again, a confirmed regularisation deepened, with and without BatchNorm, a confirmed
    label fix on the generalized cross-entropy, the confirmed levers combined), within what --max_runs and
    --budget_minutes leave.
  learning_curve: 'auto' (when an `overfitting` finding is among the findings), 'always' or 'never': the run's
    config on 1/4 and 1/2 of its training data, for the predicted gain of twice as much (learning_curve.py).
  parallel, population: the ablation engine's workers, and whether an arm's seeds (and arms that differ only in
    learning rate or weight decay) train as one population ('auto': where a GPU is at hand).
  """
  workers = dict(parallel=parallel, population=population)
  for name, value in (("explore", explore), ("learning_curve", learning_curve)):
    if value not in ("auto", "always", "never"):
      raise ValueError(f"{name}={value!r}: expected auto, always or never.")
  if not rundir.is_local(workdir):
    raise ValueError(f"--verify on {workdir}: the experiments are a sweep, whose directory must be on a disk "
                     f"its workers share. Copy the run directory to one (gsutil -m cp -r {workdir} runs/) and "
                     f"verify the copy.")
  run = Run(workdir)
  if not run.rows and not run.diverged:  # a diverged run is judged at the majority-class accuracy
    raise ValueError(f"{workdir} has no evaluation yet (metrics.jsonl is empty): train it first; there is "
                     f"nothing to compare a fix with.")
  findings = copy.deepcopy(diagnosis["findings"])  # the caller's diagnosis stays as it was
  fixes = fix_arms(run, findings, max_fixes)
  if levers is not None:
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown:
      raise ValueError(f"--levers: {', '.join(unknown)} is not a lever of the menu; choose from "
                       f"{', '.join(LEVERS)}.")
  lever_names, menu = levers, []
  start = time.monotonic()  # --budget_minutes counts the menu's LR range test too, where it runs one
  if explore == "always" or (explore == "auto" and (not fixes or diagnosis["verdict"] == "healthy")):
    menu = _menu(run, fixes, lever_names, log)
  out = os.path.join(workdir, VERIFY_DIR)
  first_seed = int(run.get("seed", 0))
  seed_list = [first_seed + i for i in range(seeds)]
  curve_arms = []
  if learning_curve == "always" or (learning_curve == "auto" and
                                    any(f["cause"] == "overfitting" for f in findings)):
    curve_arms = curve_arms_of(run)
    if not curve_arms:
      log("No learning curve: the training set is too small to quarter (or its size is not in audit.json).")
  arm_list = [ablate.Arm(BASELINE_ARM)] + [a for a, *_ in fixes] + [a for a, _ in menu] + curve_arms
  _reuse_run(workdir, out, first_seed)
  log(f"Verifying {len(fixes)} fix arm(s)" + (f" and {len(menu)} lever(s)" if menu else "") +
      (" with a learning curve (1/4 and 1/2 of the training data)" if curve_arms else "") +
      f" over {seeds} seeds in {out}.")
  # The arms skip the LR range test every new run makes (config.lr_range_test): an experiment compares arms, and
  # the sweep would cost each of them its seconds (a minute a run for a ResNet-20 on a CPU).
  base_config = {**run.config, "lr_range_test": False}
  budget_left = budget_minutes - (time.monotonic() - start) / 60 if budget_minutes else 0.0
  if budget_minutes and budget_left <= 0:
    error = (f"--budget_minutes={budget_minutes:g} was spent before the first run (the LR range test took "
             f"{(time.monotonic() - start) / 60:.1f} min): raise it, or give --levers without lr_range_test.")
    log(f"Verification incomplete: {error}")
    table = _aggregate_finished(out)
  else:
    table, error = _stage(ablate.Sweep(base_config, arm_list, seed_list, BASELINE_ARM), out, workers, max_runs,
                          budget_left, log)
  arms = {a["arm"]: a for a in (table or {}).get("arms", [])}
  base = arms.get(BASELINE_ARM)
  levers = []
  read_fixes(fixes, arms, base, reference)
  confirmed = read_levers(menu, arms, base, reference, levers, findings)
  curve = read_curve(run, arms, base, seed_list) if curve_arms else None
  if curve and curve["confirmed"]:
    findings.append(curve_finding(curve, VERIFY_DIR, HIGH_GAIN))
  tried = list({id(f): f for _, f, applied, _ in fixes if not applied}.values())
  refuted = [f for f in tried if state(f) == "refuted"]

  def extend(new_arms: list, skipped: str, starting: str):
    """Trains `new_arms` beside the sweep's arms, within what --max_runs and --budget_minutes leave: the new
    aggregate table and error, or None (logged) when nothing is left for them."""
    nonlocal arm_list
    spent = len(arm_list) * seeds
    budget_left = budget_minutes - (time.monotonic() - start) / 60 if budget_minutes else 0.0
    if (max_runs and spent + len(new_arms) * seeds > max_runs) or (budget_minutes and budget_left <= 0):
      log(f"{skipped} skipped: --max_runs/--budget_minutes spent.")
      return None
    log(starting)
    arm_list = arm_list + new_arms
    return _stage(ablate.Sweep(base_config, arm_list, seed_list, BASELINE_ARM), out, workers,
                  max_runs and max_runs - spent, budget_left, log)

  if explore == "auto" and not menu and tried and error is None and len(refuted) == len(tried):
    # Every fix was refuted: the single-run findings explain nothing the experiment could win back, which is
    # the case the menu is for (e.g. a bundle of regularisers that costs more than the overfitting it cures).
    menu = _menu(run, fixes, lever_names, log)
    names = ", ".join(a.name for a, _ in menu)
    staged = menu and extend([a for a, _ in menu], f"The lever menu ({names})",
                             f"Every fix was refuted; trying the lever menu: {names} over {seeds} seeds.")
    if staged:
      table, error = staged
      arms = {a["arm"]: a for a in (table or {}).get("arms", [])}
      confirmed = read_levers(menu, arms, arms.get(BASELINE_ARM), reference, levers, findings)
  # Fixes confirmed on validation accuracy join the combination: two causes fixed together (the compound
  # fault's lighting and long tail) show what fixing both buys.
  fixed = [(ablate.Arm(f["verified"]["arm"], f["verified"]["overrides"]), f["cause"], f["verified"]) for f in tried
           if state(f) == "confirmed" and f["verified"]["metric"] == "final_val_accuracy"]
  stage2 = (follow_up_arms(confirmed + fixed, lambda arm: _still_learning(out, arm, seed_list), run.get)
            if follow_up and error is None else [])
  if lever_names is not None:  # --levers bounds the follow-up too: only the follow-up arms it names
    stage2 = [f for f in stage2 if f.arm.name in set(lever_names)]
  stage2 = [f for f in stage2 if _buildable(run, f.arm, log)]
  trained = [dict(a.overrides) for a in arm_list]  # e.g. `combined` of a regulariser and deeper blocks is
  stage2 = [f for i, f in enumerate(stage2)  # `regularised_deeper`: the same runs once, under the first name
            if dict(f.arm.overrides) not in trained + [dict(g.arm.overrides) for g in stage2[:i]]]
  staged = stage2 and extend(
      [f.arm for f in stage2], f"Follow-up ({', '.join(f.arm.name for f in stage2)})",
      f"Follow-up: {', '.join(f'{f.arm.name} ({f.why})' for f in stage2)} over {seeds} seeds.")
  if staged:
    table, error = staged
    arms = {a["arm"]: a for a in (table or {}).get("arms", [])}
    read_levers([(f.arm, f.cause) for f in stage2], arms, arms.get(BASELINE_ARM), reference, levers, findings,
                 follow_ups={f.arm.name: f for f in stage2})
    for finding in findings:  # whether twice as long again was itself enough
      if finding.get("source") == "experiment" and finding["evidence"].get("lever") == "longer_x2":
        _say_if_still_learning(finding, *_still_learning(out, "longer_x2", seed_list))
  out = rank(diagnosis, findings, levers, error, (table or {}).get("incomplete", []))
  if curve_arms:
    out["verification"]["learning_curve"] = curve
  return out


def _menu(run: Run, fixes, levers: Sequence[str] | None, log) -> list[tuple[ablate.Arm, str]]:
  """The lever menu for this run, less the arms a fix already trains, bounded to `levers` (names)."""
  if levers is None or "lr_range_test" in levers:
    ensure_lr_range_test(run, os.path.join(run.workdir, VERIFY_DIR, "lr_find"), log)  # where the run has none
  taken = {a.name for a, *_ in fixes}
  fix_fields = [dict(a.overrides) for a, *_ in fixes]
  menu = [(a, cause) for a, cause in menu_arms(run) if a.name not in taken and dict(a.overrides) not in fix_fields]
  if levers is not None:
    absent = sorted(set(levers) - {a.name for a, _ in menu} - set(FOLLOW_UP_LEVERS))
    if absent:  # e.g. no LR range test in the run, weight decay already on: nothing to change
      log(f"Levers that do not apply to this run (or are a fix already): {', '.join(absent)}.")
    menu = [(a, cause) for a, cause in menu if a.name in set(levers)]
  return [(a, cause) for a, cause in menu if _buildable(run, a, log)]  # only what was asked for is judged


def _still_learning(out: str, arm: str, seeds: Sequence[int]) -> tuple[int, int]:
  """(runs still learning when they stopped, by the single-run rule; runs finished) of one arm of the sweep."""
  dirs = [ablate.run_dir(out, arm, seed) for seed in seeds]
  finished = [d for d in dirs if ablate.run_status(d) == "finished"]
  return sum(still_learning(Run(d)) is not None for d in finished), len(finished)


def _say_if_still_learning(finding: dict, learning: int, finished: int) -> None:
  """Adds to a confirmed longer_x2 finding whether its own runs were still learning when they stopped."""
  finding["evidence"]["runs_still_learning"] = [learning, finished]
  finding["explanation"] += (
      f" {learning} of its {finished} runs were still learning when they stopped: longer still may gain more."
      if 2 * learning > finished else
      f" Its runs were not clearly still learning by their last evaluation ({learning} of {finished} by the "
      f"single-run rule): more epochs than this are unlikely to add much.")


def _buildable(run: Run, arm: ablate.Arm, log) -> bool:
  """False, saying why, for an arm whose model cannot be built on the run's images (levers.unbuildable)."""
  why = unbuildable(run, arm)
  if why:
    log(f"Lever {arm.name} left out: {why}.")
  return not why


def _stage(sweep: ablate.Sweep, out: str, workers: dict, max_runs: int, budget_minutes: float, log):
  """Trains what `sweep` lacks in `out` (`workers`: run_sweep's parallel and population); (aggregate table or
  None, the error that left it incomplete)."""
  try:
    return ablate.run_sweep(sweep, out, **workers, max_runs=max_runs, budget_minutes=budget_minutes,
                            log=log), None
  except ablate.SweepIncomplete as e:  # over budget or failed runs: judge what finished, say what did not
    log(f"Verification incomplete: {e}")
    return _aggregate_finished(out), str(e)


def _aggregate_finished(out: str):
  """The aggregate table of what a sweep in `out` finished, or None where none was ever started there."""
  return ablate.aggregate(out) if os.path.exists(os.path.join(out, ablate.SWEEP_FILE)) else None

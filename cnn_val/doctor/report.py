"""`report.md` and `plots/*.png` for a run directory: what a person reads after a run.

Plots (matplotlib, no display needed): learning curves (loss and accuracy, train and validation, best epoch
and final gap marked), the learning-rate schedule, the confusion matrix (best evaluation), per-class
validation recall, brightness and contrast histograms per split (from audit.json), and the LR range test
when lr_find.json exists. The Markdown lists the verdict and the ranked findings with their evidence and
fixes, then the plots.
"""

from __future__ import annotations

import json
import os

import numpy as np

from cnn_val import ablate, knn, metrics, rundir
from cnn_val.doctor.finding import verification_result
from cnn_val.doctor.label_check import label_issues
from cnn_val.doctor.levers import versus_text
from cnn_val.doctor.signal_rules import LR_TEST_FAULT_FREE, lr_test_threshold
from cnn_val.doctor.rules import summary as diagnosis_summary

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _save(fig, workdir: str, name: str) -> str:
  fig.tight_layout()
  rundir.atomically(os.path.join(workdir, PLOTS_DIR, name), "wb", lambda f: fig.savefig(f, dpi=90, format="png"))
  _pyplot().close(fig)
  return f"{PLOTS_DIR}/{name}"


def _class_labels(class_names, k: int) -> list[str]:
  return list(class_names) if len(class_names) == k else [str(i) for i in range(k)]


def plot_learning_curves(workdir, rows):
  plt = _pyplot()
  epochs = [r["epoch"] for r in rows]
  best = max(rows, key=lambda r: r["val_accuracy"])
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
  ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
  ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
  ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
  ax_acc.plot(epochs, [r["train_accuracy"] for r in rows], "o-", label="train")
  ax_acc.plot(epochs, [r["val_accuracy"] for r in rows], "o-", label="validation")
  if "test_accuracy" in rows[-1]:
    ax_acc.plot([epochs[-1]], [rows[-1]["test_accuracy"]], "k*", markersize=10, label="test (final)")
  for ax in (ax_loss, ax_acc):
    ax.axvline(best["epoch"], color="gray", linestyle="--", linewidth=1, label=f"best val (epoch {best['epoch']})")
    ax.grid(alpha=0.3)
  last = rows[-1]
  ax_acc.annotate(f"gap {100 * (last['train_accuracy'] - last['val_accuracy']):+.1f} pts",
                  (epochs[-1], (last["train_accuracy"] + last["val_accuracy"]) / 2), ha="right")
  ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
  ax_acc.legend(fontsize=8)
  return _save(fig, workdir, "learning_curves.png")


def plot_lr(workdir, rows):
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], "o-")
  ax.set(xlabel="step", ylabel="learning rate (at each evaluation)", title="Learning-rate schedule")
  ax.grid(alpha=0.3)
  return _save(fig, workdir, "lr_schedule.png")


def plot_confusion(workdir, rows, class_names):
  row = next((r for r in sorted(rows, key=lambda r: -r["val_accuracy"]) if "val_confusion" in r), None)
  if row is None:
    return None
  plt = _pyplot()
  c = np.asarray(row["val_confusion"], float)
  rates = metrics.confusion_rates(c)
  k = len(c)
  fig, ax = plt.subplots(figsize=(1.2 + 0.55 * k, 1.0 + 0.5 * k))
  im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  for i in range(k):
    for j in range(k):
      if c[i, j]:
        ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black")
  labels = _class_labels(class_names, k)
  ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(k), labels, fontsize=8)
  ax.set(xlabel="predicted", ylabel="true", title=f"Validation confusion (epoch {row['epoch']})")
  fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
  return _save(fig, workdir, "confusion.png")


def plot_recall(workdir, rows, class_names):
  plt = _pyplot()
  recall = [np.nan if r is None else r for r in rows[-1]["val_per_class_recall"]]
  k = len(recall)
  labels = _class_labels(class_names, k)
  fig, ax = plt.subplots(figsize=(max(5, 0.5 * k), 3.2))
  ax.bar(range(k), recall)
  ax.axhline(rows[-1]["val_accuracy"], color="gray", linestyle="--", label="accuracy")
  ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
  ax.set(ylim=(0, 1), ylabel="recall", title=f"Per-class validation recall (epoch {rows[-1]['epoch']})")
  ax.legend(fontsize=8)
  return _save(fig, workdir, "per_class_recall.png")


def plot_image_stats(workdir, audit):
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
  for ax, stat in zip(axes, ("brightness", "contrast")):
    for name, split in audit["splits"].items():
      hist = np.asarray(split[stat]["histogram"], float)
      edges = np.linspace(*split[stat]["histogram_range"], len(hist) + 1)
      ax.step(edges[:-1], hist / max(hist.sum(), 1), where="post", label=name)
    ks = audit.get("drift", {}).get("validation", {}).get(stat, {}).get("ks")
    ax.set(xlabel=f"per-image {stat}", ylabel="fraction of images",
           title=f"{stat.capitalize()}" + (f" (train vs validation KS {ks:.3f})" if ks is not None else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  return _save(fig, workdir, "image_stats.png")


def plot_lr_find(workdir, lr_find):
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  lrs, smoothed = np.asarray(lr_find["lrs"], float), np.asarray(lr_find["smoothed_loss"], float)
  ax.plot(lrs, np.asarray(lr_find["losses"], float), alpha=0.3, label="loss")
  ax.plot(lrs, smoothed, label="smoothed")
  if lr_find.get("suggestion"):
    ax.axvline(lr_find["suggestion"], color="red", linestyle="--", label=f"suggestion {lr_find['suggestion']:.2g}")
  ax.set_xscale("log")
  finite = smoothed[np.isfinite(smoothed)]
  if len(finite):
    ax.set_ylim(finite.min() * 0.9, min(finite.max(), 3 * finite[0]) * 1.1)
  ax.set(xlabel="learning rate", ylabel="training loss", title="LR range test")
  ax.legend(fontsize=8)
  return _save(fig, workdir, "lr_find.png")


def _evidence_text(evidence: dict) -> str:
  def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)
  return ", ".join(f"`{k}` = {fmt(v)}" for k, v in evidence.items()
                   if v is not None and k != "likely_wrong_labels")  # that one has a section of its own


def _label_section(workdir: str, class_names) -> list[str]:
  """The likely-wrong training labels (cleanlab on train_predictions.npz), by class pair and example."""
  issues = label_issues(workdir)
  if not issues:
    return []
  lines = ["## Likely-wrong training labels", ""]
  if issues.get("skipped"):
    return lines + [f"Not checked: {issues['skipped']}.", ""]
  name = lambda c: class_names[c] if c < len(class_names) else str(c)
  lines += [f"Confident learning (cleanlab, on the outputs of {issues.get('weights', 'the final weights')} for "
            f"the {issues['examples']:,} training examples) flags {issues['flagged']:,} "
            f"({100 * issues['fraction']:.1f}%) whose label the model most confidently disagrees with. The "
            f"outputs are in-sample, so a label the model has memorised is missed: a lower bound (the best "
            f"checkpoint's weights, where the run went on past them, memorised less). Clean data "
            f"has some too (ambiguous images); what points to wrong labels is a share well above a clean run's "
            f"of the same data, concentrated on a few class pairs. Their indices are in `label_issues.json` when "
            f"a `label_noise` finding cites them (with the class the model sees for each): "
            f"`--config.data.exclude_train_examples=` that file trains without them, "
            f"`--config.data.relabel_train_examples=` with them relabelled.", ""]
  if issues["pairs"]:
    lines += ["| labelled | the model sees | flagged | share of the label's examples |", "| --- | --- | --- | --- |"]
    lines += [f"| {name(p['given'])} | {name(p['suggested'])} | {p['count']} | {100 * p['share_of_given']:.1f}% |"
              for p in issues["pairs"]]
    lines += ["", "Least confident in their label (index in the training split as loaded, after any scenario): "
              + ", ".join(f"{w['index']} ({name(w['given'])} -> {name(w['suggested'])}, "
                          f"p = {w['given_probability']:.2f})" for w in issues["worst"][:10]) + ".", ""]
  return lines


def _flag(field: str, value) -> str:
  """A command-line override for cnn_val.main (tuples as '(a, b)', quoted for the shell)."""
  if isinstance(value, (list, tuple)):
    return f"'--{field}=({', '.join(map(str, value))}{',' if len(value) == 1 else ''})'"
  return f"--{field}={value}"


def _fix_line(finding: dict) -> str:
  """'- Fix: ...' with the overrides to try (not for a fix already applied), and, before an experiment chose
  among them, the other options."""
  fix = finding["fix"]
  flags_of = lambda overrides: " ".join(_flag(k, v) for k, v in overrides.items())
  line = f"- Fix: {fix['summary']}"
  if fix.get("applied"):
    return line
  if fix["overrides"]:
    line += f" Try: `{flags_of(fix['overrides'])}`"
  if fix.get("options") and not finding.get("verified"):
    line += "; or " + "; or ".join(f"{o['name']}: `{flags_of(o['overrides'])}`" for o in fix["options"][1:])
  return line


def _state(finding: dict):
  v = finding.get("verified")
  return verification_result(v)


def _pts(x) -> str:
  return "-" if x is None else f"{100 * x:.2f}"  # a fraction as percentage points


def _verified_text(v: dict) -> str:
  ci = f"95% CI [{100 * v['ci95'][0]:+.2f}, {100 * v['ci95'][1]:+.2f}] points" if v.get("ci95") else "no CI (one seed)"
  text = (f"{v['metric']} {_pts(v['baseline']['mean'])}% -> {_pts(v['fixed']['mean'])}% over {v['seeds']} seeds, "
          f"gain {_pts(v['delta'])} points, {ci}" + ("" if v["higher_is_better"] else " (lower is better)")
          + f": **{'confirmed' if v['confirmed'] else 'not confirmed'}**")
  if v.get("applied"):
    text = "what the applied fix bought (the config without it as the comparison): " + text
  if v.get("predicted"):
    text = f"predicted ({v['predicted']}): " + text
  if v.get("recovered") is not None:
    text += f"; recovers {100 * v['recovered']:.0f}% of the loss against the reference ({_pts(v['reference'])}%)"
  return text + f" (runs: `{v['runs']}`)."


def plot_data_curve(workdir: str, curve: dict) -> str:
  """Validation accuracy against training examples (log scale): each seed's measured points (solid) and its
  prediction for twice the data (dashed)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  n = list(curve["examples"])
  for i, s in enumerate(curve["seeds"]):
    acc = 100 * np.asarray(s["accuracies"])
    ax.plot(n, acc, "o-", color=f"C{i}", label=f"seed {s['seed']}")
    ax.plot([n[-1], 2 * n[-1]], [acc[-1], acc[-1] + 100 * s["predicted_gain"]], "--", color=f"C{i}", alpha=0.7)
    ax.plot([2 * n[-1]], [acc[-1] + 100 * s["predicted_gain"]], "o", mfc="none", color=f"C{i}")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("training examples (2x: predicted)")
  ax.set_ylabel("final validation accuracy (%)")
  ax.legend(fontsize=8)
  return _save(fig, workdir, "learning_curve.png")


def _curve_lines(workdir: str, curve: dict | None) -> list[str]:
  if not curve:
    return []
  gain = curve["predicted_gain"]
  ci = f"[{100 * gain['ci95'][0]:+.2f}, {100 * gain['ci95'][1]:+.2f}]" if gain.get("ci95") else "-"
  accuracies = curve["mean_accuracies"]
  lines = ["", "### Learning curve", "", "| training examples | " + " | ".join(f"{n:,}" for n in curve["examples"])
           + " | 2x (predicted) |", "| --- |" + " --- |" * (len(curve["examples"]) + 1),
           "| final val accuracy % | " + " | ".join(f"{100 * a:.2f}" for a in accuracies)
           + f" | {100 * (accuracies[-1] + gain['mean']):.2f} |", "",
           f"Same number of steps at each size; each doubling gained {100 * curve['ratio']:.0f}% of the one "
           f"before (mean over seeds), and a curve that keeps diminishing so (a saturating power law through "
           f"each seed's points) predicts {100 * gain['mean']:+.2f} points {ci} from twice the data "
           f"(p = {curve['p_value']:.3g}; an upper estimate): "
           f"**{'confirmed' if curve['confirmed'] else 'not confirmed'}**.", ""]
  lines += [f"![Learning curve]({plot_data_curve(workdir, curve)})"]
  return lines


def _verified_section(workdir: str, diagnosis: dict) -> list[str]:
  """The experiments: a table of every verified change, the sweep's bar chart and learning curves."""
  info = diagnosis.get("verification")
  if not info:
    return []
  lines = ["## Verified", "", f"Each change trained against the same config and seeds ({info['dir']}/). "
           f"Verdict rule: {info['rule']}.", "",
           "| finding | change | seeds | baseline | with the change | gain (points) | 95% CI | p | result |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  rows = []
  for f in diagnosis["findings"]:
    v = f.get("verified")
    if v and v.get("options"):  # a fix with options: each one tried, the one kept first
      rows += [(f"`{f['cause']}`: option `{o['option']}`" + (" (kept)" if o["option"] == v["option"] else ""), o)
               for o in sorted(v["options"], key=lambda o: o["option"] != v["option"])]
    elif v and v.get("predicted"):  # the learning curve's: no config change, a prediction
      rows.append((f"`{f['cause']}`: twice the training data (predicted by the learning curve)", v))
    elif v:
      rows.append((f"`{f['cause']}`", v))
  rows += [(f"lever `{lever['lever']}` ({lever['cause']})", lever) for lever in info.get("levers", [])
           if not lever["confirmed"]]  # the confirmed ones are findings above
  for name, v in rows:
    change = ", ".join(f"{k}={val}" for k, val in v.get("overrides", {}).items())
    ci = f"[{100 * v['ci95'][0]:+.2f}, {100 * v['ci95'][1]:+.2f}]" if v.get("ci95") else "-"
    result = {"confirmed": "confirmed", "inconclusive": "inconclusive (CI reaches 0)",
              "refuted": "refuted (no gain)", None: "too few seeds"}[verification_result(v)]
    lines.append(f"| {name} | {'without: ' if v.get('applied') else ''}{change} | {v['seeds']} | "
                 f"{_pts(v['baseline']['mean'])} ± {_pts(v['baseline']['std'])} | "
                 f"{_pts(v['fixed']['mean'])} ± {_pts(v['fixed']['std'])} | {_pts(v['delta'])} | {ci} | "
                 f"{ablate.format_p(v)} | {result} |")
  follow_ups = [lever for lever in info.get("levers", []) if lever.get("vs_parent")]
  if follow_ups:  # each follow-up against the confirmed arm it builds on, not only against the baseline
    lines += [""] + [f"- `{lever['lever']}`:{versus_text(lever['vs_parent'])}" for lever in follow_ups]
  lines += _curve_lines(workdir, info.get("learning_curve"))
  if info.get("incomplete"):
    lines += ["", f"Incomplete: {info['incomplete']}"
              + (f" Not finished: {', '.join(info['unfinished_runs'])}." if info.get("unfinished_runs") else "")]
  lines.append("")
  results = os.path.join(workdir, info["dir"], "results.md")
  if rundir.exists(results):
    lines += [f"Every arm: [{info['dir']}/results.md]({info['dir']}/results.md).", ""]
  for title, name in (("Arms (final validation accuracy, 95% CI)", "arms.png"),
                      ("Learning curves of the arms", "curves.png")):
    if rundir.exists(os.path.join(workdir, info["dir"], "plots", name)):
      lines += [f"![{title}]({info['dir']}/plots/{name})", ""]
  return lines


def lr_find_text(lr_find: dict, optim: dict) -> str:
  """The LR range test in a sentence: what it suggests, where the loss bottomed out, and where the run's rate sits
  against that minimum beside what `lr_too_low` reads (signal_rules.lr_test_threshold)."""
  steepest, at_min, lr = lr_find.get("suggestion"), lr_find.get("lr_at_min_loss"), optim.get("learning_rate")
  if not at_min or not steepest:
    return "LR range test: no usable sweep (fewer than 10 finite losses)."
  text = (f"LR range test (the run's model, optimizer and data from a fresh start, rates 1e-7 to 10): it suggests "
          f"{steepest:.2g} ({lr_find.get('method')}); the loss bottomed out at {at_min:.2g}")
  if not isinstance(lr, (int, float)) or lr <= 0:
    return text + "."
  optimizer = optim.get("optimizer", "adam")
  return (text + f", {at_min / lr:.3g}x this run's rate {lr:g} (`lr_too_low` reads {lr_test_threshold(optimizer):g}x "
          f"or more with {optimizer}; runs without a rate fault: {LR_TEST_FAULT_FREE}).")


def write_report(workdir: str, diagnosis: dict) -> str:
  """Writes plots/ and report.md for `workdir`; returns the report's path."""
  rows = rundir.read_metrics(workdir)
  audit = rundir.read_json(workdir, rundir.AUDIT_FILE)
  config = rundir.read_json(workdir, rundir.CONFIG_FILE) or {}
  lr_find, lr_find_changed = rundir.read_lr_find(workdir, config)
  class_names = (audit or {}).get("class_names") or []
  lines = [f"# cnn_val report: `{workdir}`", ""]
  run = diagnosis.get("run") or {}
  if run:
    lines += [f"**Verdict: {diagnosis['verdict']}.** Validation accuracy {run['val_accuracy']:.4f} after "
              f"{run['epochs']} epochs (best {run['best_val_accuracy']:.4f} at epoch {run['best_epoch']}; "
              f"training {run['train_accuracy']:.4f})"
              + (f"; test {run['test_accuracy']:.4f}" if run.get("test_accuracy") is not None else "") + "."
              + (f" Stopped early at epoch {run['stopped_early']['epoch']} (no better validation accuracy for "
                 f"{run['stopped_early']['patience']} evaluations)." if run.get("stopped_early") else ""), ""]
  else:
    lines += [f"**Verdict: {diagnosis['verdict']}.** No evaluation was recorded.", ""]
  lines += [f"Model `{config.get('model', {}).get('name')}`, optimizer `{config.get('optim', {}).get('optimizer')}` "
            f"at learning rate {config.get('optim', {}).get('learning_rate')} "
            f"(`{config.get('optim', {}).get('schedule')}` schedule), batch {config.get('batch_size')}, "
            f"data `{config.get('data', {}).get('name')}`.", "", "## Findings", ""]
  if not diagnosis["findings"]:
    lines += ["No rule fired: nothing in the metrics, the audit or the pre-flight checks points to a cause.", ""]
  first = diagnosis.get("fix_first")
  if first and len([f for f in diagnosis["findings"] if f["severity"] == "high"]) > 1:
    lines += [f"**Fix first: `{first['cause']}`** ({first['why']}), then train again and rerun the doctor: "
              f"the other findings may be its symptoms.", ""]
  for i, f in enumerate(diagnosis["findings"], 1):
    lines += [f"### {i}. `{f['cause']}` ({f['severity']} severity, confidence {f['confidence']:.2f})"
              + {"confirmed": ": fix confirmed by experiment", "refuted": ": fix refuted by experiment",
                 "inconclusive": ": fix not shown by experiment (inconclusive; the cause stands)",
                 None: ""}[_state(f)], "", f["explanation"], "", f"- Evidence: {_evidence_text(f['evidence'])}",
              _fix_line(f), *([f"- Verified: {_verified_text(f['verified'])}"] if f.get("verified") else []), ""]
  lines += _verified_section(workdir, diagnosis)
  lines += _label_section(workdir, class_names)
  plots = []
  if rows:
    plots += [("Learning curves", plot_learning_curves(workdir, rows)), ("Learning rate", plot_lr(workdir, rows)),
              ("Confusion matrix", plot_confusion(workdir, rows, class_names)),
              ("Per-class recall", plot_recall(workdir, rows, class_names))]
  if audit:
    plots.append(("Image statistics per split", plot_image_stats(workdir, audit)))
    lines += ["## Data audit", "", "| split | examples | imbalance ratio | missing classes | brightness | contrast |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, split in audit["splits"].items():
      ratio = split["imbalance_ratio"]
      lines.append(f"| {name} | {split['count']} | {ratio:.1f} | {split['missing_classes'] or '-'} | "
                   f"{split['brightness']['mean']:.3f} | {split['contrast']['mean']:.3f} |" if ratio else
                   f"| {name} | {split['count']} | - | {split['missing_classes'] or '-'} | - | - |")
    for name, dups in audit.get("duplicates", {}).items():
      lines.append(f"\n{name}: {dups['exact']} exact and {dups['near']} near duplicates of training images.")
    reference = audit.get("pixel_reference")
    if reference and rows:
      ratio = knn.error_ratio(max(r["val_accuracy"] for r in rows), reference)
      lines.append(f"\nPixel reference: a 1-nearest-neighbour lookup on the pixels of {reference['train_examples']:,} "
                   f"training images labels {100 * reference['accuracy']:.1f}% of "
                   f"{reference['validation_examples']:,} validation images"
                   + (f"; the run's best validation error is {ratio:.2f}x the lookup's." if ratio is not None else "."))
    lines.append("")
  if lr_find:
    plots.append(("LR range test", plot_lr_find(workdir, lr_find)))
    lines += [lr_find_text(lr_find, config.get("optim", {})), ""]
  elif lr_find_changed:
    lines += [f"LR range test: {rundir.LR_FIND_FILE} was measured for another config ("
              + ", ".join(f"`{k}`: {a!r} there, {b!r} in this run" for k, (a, b) in lr_find_changed.items())
              + f"), so it is not read as this run's. `python -m cnn_val.lr_find --run={workdir}` measures this "
              "run's.", ""]
  lines += ["## Plots", ""]
  lines += [f"### {title}\n\n![{title}]({path})\n" for title, path in plots if path]
  path = os.path.join(workdir, REPORT_FILE)
  rundir.atomic_write(path, "\n".join(lines))
  _to_tensorboard(workdir, diagnosis, "\n".join(lines), [(t, p) for t, p in plots if p],
                  step=rows[-1]["step"] if rows else 0)
  return path


def _read_png(file: str):
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  with rundir.path(file).open("rb") as f:
    return matplotlib.image.imread(f, format="png")


def _to_tensorboard(workdir: str, diagnosis: dict, report: str, plots: list, step: int) -> None:
  """The doctor in TensorBoard, next to the run's scalars (clu's metric writer, an event file of its own): the
  verdict and report as text (`doctor/verdict`, `doctor/report`), each plot as an image (`doctor/<title>`)."""
  writer = rundir.tensorboard_writer(workdir)
  writer.write_texts(step, {"doctor/verdict": diagnosis_summary(diagnosis), "doctor/report": report})
  writer.write_images(step, {f"doctor/{title.lower().replace(' ', '_')}":
                             _read_png(os.path.join(workdir, rel)) for title, rel in plots})
  writer.close()

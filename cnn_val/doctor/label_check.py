"""The likely-wrong training labels of a run: cleanlab's confident learning on the training split's outputs.

Training writes `train_predictions.npz` at its last evaluation: the softmax outputs, in eval mode, of every
training example, with the label the run trained on and its index in the training split as loaded (after any
scenario), from the best checkpoint's weights (the best validation accuracy), or the final ones where the last
evaluation is the best; the file says which (`checkpoint`, `step`). Confident learning
(`cleanlab.filter.find_label_issues`, pruning by the estimated noise rate) flags the examples whose given label
the model, having learned from the rest, most confidently disagrees with; they are counted per (given,
suggested) class pair, so that labels swapped between two classes show up as one dominant pair.
`write_flagged` writes their indices to `label_issues.json`, which `config.data.exclude_train_examples` reads
to train without them (and `config.data.relabel_train_examples` to relabel them), and cleanlab's estimate of the
noise itself, P(given label | true class), to `noise_transition.json`, which `config.data.noise_transition`
reads to correct the loss (forward correction): the label_noise finding's options, verified like any other fix.

The outputs are in-sample (the model trained on these examples), where cleanlab recommends out-of-sample
ones: a model that has memorised a wrong label agrees with it, so the count is a lower bound, tightest on
short and regularised runs, and on the best checkpoint of a run that went on to memorise (a network fits the
clean labels before the wrong ones: early learning). Reads files only; needs the `cleanlab` package (in
cnn_val's dependencies).
"""

from __future__ import annotations

import collections
import functools
import os
import zipfile

import numpy as np

from cnn_val import rundir

MAX_PAIRS = 5  # class pairs reported
MAX_EXAMPLES = 20  # flagged examples listed, least confident in their given label first
LABEL_ISSUES_FILE = "label_issues.json"  # every flagged training index, for config.data.exclude_train_examples
NOISE_TRANSITION_FILE = "noise_transition.json"  # P(given label | true class), for config.data.noise_transition


@functools.lru_cache(maxsize=8)
def _flagged(path: str, version: tuple):
  """(probs, labels, index, flagged positions ranked by self-confidence, source) of a predictions file, or a
  reason it was skipped (str); source: {'checkpoint', 'step'} of the weights that gave the outputs (empty for a
  file written before it said). Cached per file version: the rules and the doctor's file writer share one run."""
  del version  # part of the cache key only
  try:
    with rundir.path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
      probs, labels, index = data["probs"].astype(np.float64), data["labels"].astype(int), data["index"]
      source = ({"checkpoint": str(data["checkpoint"]), "step": int(data["step"])}
                if {"checkpoint", "step"} <= set(data.files) else {})
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # optional: skipped, not fatal
    return (f"{path} cannot be read ({e}); to check the labels again, delete it and write it anew "
            f"(cnn_val.evaluate.write_train_predictions)")
  num_classes = probs.shape[1]
  present = np.bincount(labels, minlength=num_classes)
  if len(labels) < 2 * num_classes or (present[present > 0] < 2).any():
    return "too few examples per class for confident learning"
  try:
    from cleanlab import filter as cl_filter  # pylint: disable=import-outside-toplevel  (pandas, sklearn)
  except ImportError:
    return "the cleanlab package is not installed (pip install cleanlab)"
  probs = probs / probs.sum(axis=1, keepdims=True)
  flagged = np.asarray(cl_filter.find_label_issues(labels, probs, filter_by="prune_by_noise_rate",
                                                   return_indices_ranked_by="self_confidence", n_jobs=1), int)
  return probs, labels, index, flagged, source  # (callers copy `source` before handing it out: it is cached)


def _weights(source: dict) -> str:
  """Which weights gave the outputs, in words: 'the best checkpoint's weights (step 1400)'."""
  if not source:
    return "the final weights"
  name = "the best checkpoint's" if source["checkpoint"] == "best" else "the final"
  return f"{name} weights (step {source['step']})"


def flagged_in(workdir: str):
  """`_flagged` of the run's predictions file, or None when the run wrote none (benchmarks/label_check.py
  scores these flags against the truth)."""
  path = os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE)
  try:  # the file's version: its mtime (a local file's in ns: epath's stat has whole seconds) and size
    if rundir.is_local(path):
      st = os.stat(path)
      version = (st.st_mtime_ns, st.st_size)
    else:
      st = rundir.path(path).stat()
      version = (st.mtime, st.length)
  except FileNotFoundError:
    return None
  return _flagged(path, version)


def noise_transition(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """Confident learning's estimate of the label noise, [K, K] with row i = P(given label j | true class i)
  (`cleanlab.count.estimate_py_and_noise_matrices_from_probabilities`, whose noise matrix is the transpose); a
  class no example is confidently counted in keeps its label (a row of the identity)."""
  from cleanlab import count  # pylint: disable=import-outside-toplevel  (pandas, sklearn)
  _, noise_matrix, _, _ = count.estimate_py_and_noise_matrices_from_probabilities(labels, probs)
  matrix = np.asarray(noise_matrix, np.float64).T
  sums = matrix.sum(axis=1, keepdims=True)
  eye = np.eye(len(matrix))
  return np.where(sums > 0, matrix / np.where(sums > 0, sums, 1.0), eye)


def true_class_given_label(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """Confident learning's estimate of where each label's examples come from, [K, K] with row j = P(true class i |
  given label j) (cleanlab's inverse noise matrix, transposed); a label no example is confidently counted in keeps
  its class (a row of the identity)."""
  from cleanlab import count  # pylint: disable=import-outside-toplevel  (pandas, sklearn)
  _, _, inverse, _ = count.estimate_py_and_noise_matrices_from_probabilities(labels, probs)
  matrix = np.asarray(inverse, np.float64).T
  sums = matrix.sum(axis=1, keepdims=True)
  return np.where(sums > 0, matrix / np.where(sums > 0, sums, 1.0), np.eye(len(matrix)))


def write_flagged(workdir: str) -> str | None:
  """Writes every flagged example's training index, and the class the model sees for it, to
  `label_issues.json` (for config.data.exclude_train_examples and config.data.relabel_train_examples), and the
  estimated noise to `noise_transition.json` (config.data.noise_transition); returns the first path, None when
  nothing was flagged (and then writes neither)."""
  result = flagged_in(workdir)
  if result is None or isinstance(result, str) or not len(result[3]):
    return None
  probs, labels, index, flagged, source = result
  weights = {"predictions_from": dict(source)} if source else {}
  rundir.write_json(workdir, NOISE_TRANSITION_FILE, {
      "transition": [[round(float(p), 6) for p in row] for row in noise_transition(labels, probs)],
      "how": "row i: P(given label j | true class i), cleanlab.count.estimate_py_and_noise_matrices_from_"
             f"probabilities on train_predictions.npz, from {_weights(source)} (its noise matrix, transposed)",
      **weights})
  order = np.argsort(index[flagged], kind="stable")
  rundir.write_json(workdir, LABEL_ISSUES_FILE, {
      "indices": [int(i) for i in index[flagged][order]],
      "labels": [int(c) for c in probs[flagged].argmax(axis=1)[order]],  # the class the model sees, per index
      "how": "cleanlab.filter.find_label_issues(filter_by='prune_by_noise_rate') on train_predictions.npz, "
             f"from {_weights(source)}; labels: the model's most probable class",
      **weights})
  return os.path.join(workdir, LABEL_ISSUES_FILE)


def label_issues(workdir: str) -> dict | None:
  """{'examples', 'flagged', 'fraction', 'pairs': [{'given', 'suggested', 'count', 'share_of_given'}],
  'worst': [{'index', 'given', 'suggested', 'given_probability'}], 'weights': which weights gave the outputs
  (words), and 'predictions_from': {'checkpoint', 'step'} where the file says}, or None when the run wrote no
  predictions (a multi-process run, or a run from before the file existed)."""
  result = flagged_in(workdir)
  if result is None:
    return None
  if isinstance(result, str):
    return {"examples": 0, "flagged": 0, "fraction": 0.0, "pairs": [], "worst": [], "skipped": result}
  probs, labels, index, flagged, source = result
  present = np.bincount(labels, minlength=probs.shape[1])
  suggested = probs.argmax(axis=1)
  counts = collections.Counter((int(labels[i]), int(suggested[i])) for i in flagged)
  pairs = [{"given": g, "suggested": s, "count": c, "share_of_given": c / max(int(present[g]), 1)}
           for (g, s), c in counts.most_common(MAX_PAIRS)]
  worst = [{"index": int(index[i]), "given": int(labels[i]), "suggested": int(suggested[i]),
            "given_probability": float(probs[i, labels[i]])} for i in flagged[:MAX_EXAMPLES]]
  return {"examples": int(len(labels)), "flagged": int(len(flagged)), "fraction": len(flagged) / len(labels),
          "pairs": pairs, "worst": worst, "weights": _weights(source),
          **({"predictions_from": dict(source)} if source else {})}

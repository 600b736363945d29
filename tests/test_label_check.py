"""The doctor's label check: cleanlab's confident learning on the training probe's outputs finds labels swapped
between two classes, flags nothing on confident clean outputs, feeds the label_noise finding and the report, and
never stops the doctor (an unreadable file or a missing package skip it with the reason)."""

import json
import os
import types

import numpy as np
import pytest

from cnn_val import rundir
from cnn_val.doctor import label_check, report, rules
from tests.test_diagnose import _audit, _rows, _run

K = 10


def _predictions(workdir, *, swapped: float, n: int = 2000, seed: int = 0, source=None):
  """Outputs of a model that learned the true classes (probability 0.9 on the true class, a little noise),
  with `swapped` of class 3's labels given as class 5; `source`: the weights' (checkpoint, step) as training
  records them (None: a file from before it did)."""
  rng = np.random.default_rng(seed)
  true = np.arange(n) % K
  probs = rng.dirichlet(np.ones(K) * 0.5, n) * 0.1
  probs[np.arange(n), true] += 0.9
  labels = true.copy()
  threes = np.flatnonzero(true == 3)
  flipped = threes[: int(swapped * len(threes))]
  labels[flipped] = 5
  os.makedirs(workdir, exist_ok=True)
  extra = {} if source is None else {"checkpoint": np.array(source[0]), "step": np.array(source[1], np.int64)}
  rundir.write_npz(workdir, rundir.TRAIN_PREDICTIONS_FILE, probs=probs.astype(np.float32),
                   labels=labels.astype(np.int32), index=np.arange(n) * 3, **extra)
  return flipped


def test_labels_swapped_between_two_classes_are_found_and_clean_ones_are_not(tmp_path):
  flipped = _predictions(str(tmp_path / "swapped"), swapped=0.3)
  issues = label_check.label_issues(str(tmp_path / "swapped"))
  assert len(flipped) == 60 and 20 <= issues["flagged"] <= 60  # cleanlab's estimate of the count is conservative
  assert len(issues["pairs"]) == 1 and (issues["pairs"][0]["given"], issues["pairs"][0]["suggested"]) == (5, 3)
  assert issues["pairs"][0]["share_of_given"] == issues["flagged"] / 260
  assert {w["index"] for w in issues["worst"]} <= set(flipped * 3)  # only swapped ones, by training-split index
  _predictions(str(tmp_path / "clean"), swapped=0.0)
  clean = label_check.label_issues(str(tmp_path / "clean"))
  assert clean["flagged"] == 0 and clean["pairs"] == []
  assert label_check.label_issues(str(tmp_path / "none")) is None  # a run without the file: no check
  assert issues["weights"] == "the final weights" and "predictions_from" not in issues  # an older file


def test_the_label_noise_finding_and_the_report_list_them(tmp_path):
  noisy = _rows(train_acc=(0.5, 0.55), val_acc=(0.8, 0.86), train_loss=(1.5, 1.3))
  workdir = str(tmp_path)
  _predictions(workdir, swapped=0.3, source=("best", 40))
  result = _run(tmp_path, noisy)
  finding = next(f for f in result["findings"] if f["cause"] == "label_noise")
  count = finding["evidence"]["likely_wrong_labels"]["flagged"]
  assert "cleanlab) on the outputs of the best checkpoint's weights (step 40)" in finding["explanation"]
  assert finding["evidence"]["likely_wrong_labels"]["predictions_from"] == {"checkpoint": "best", "step": 40}
  assert f"labelled c5 where the model sees c3 ({count}," in finding["explanation"]
  text = open(report.write_report(workdir, result)).read()
  assert "on the outputs of the best checkpoint's weights (step 40) for the 2,000 training examples" in text
  assert "## Likely-wrong training labels" in text and f"| c5 | c3 | {count} | {100 * count / 260:.1f}% |" in text
  assert "likely_wrong_labels" not in text.split("## Likely-wrong")[0]  # not dumped among the evidence
  assert finding["fix"]["overrides"] == {  # the option that won on both label faults, until --verify says
      "config.data.noise_transition": os.path.join(os.path.abspath(workdir), "noise_transition.json")}
  assert finding["fix"]["options"][1:] == [
      {"name": "exclude", "overrides": {
          "config.data.exclude_train_examples": os.path.join(os.path.abspath(workdir), "label_issues.json")}},
      {"name": "relabel", "overrides": {
          "config.data.relabel_train_examples": os.path.join(os.path.abspath(workdir), "label_issues.json")}},
      {"name": "robust", "overrides": {"config.gce_q": 0.7}}]
  label_check.write_flagged(workdir)  # as the doctor's examine() writes it: every flagged training index
  listing = rundir.read_json(workdir, label_check.LABEL_ISSUES_FILE)
  listed = listing["indices"]
  assert len(listed) == count and set(listed) <= set(range(3, 2000 * 3, 3))
  assert listed == sorted(listed) and listing["labels"] == [3] * count  # swapped 3 -> 5: the model sees 3
  assert listing["predictions_from"] == {"checkpoint": "best", "step": 40} and "(step 40)" in listing["how"]
  # The noise estimate, as training reads it: class 3 given as 5 in 30% of its labels, every other class clean.
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  matrix = loading.noise_transition(os.path.join(workdir, label_check.NOISE_TRANSITION_FILE), K)
  # (cleanlab's estimate is conservative here, as its count above: 0.15 of the 0.3.)
  np.testing.assert_allclose(np.delete(matrix, 3, axis=0), np.delete(np.eye(K), 3, axis=0), atol=0.02)
  assert 0.1 < matrix[3, 5] <= 0.35 and np.delete(matrix[3], [3, 5]).max() < 0.02
  quiet = rules.diagnose(str(tmp_path))  # the same verdict with the file gone, without the listing
  os.remove(os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE))
  plain = next(f for f in rules.diagnose(workdir)["findings"] if f["cause"] == "label_noise")
  assert "likely_wrong_labels" not in plain["evidence"] and quiet["verdict"] == result["verdict"]
  # Without a listing, the fix is the loss robust to what is wrong (weight decay, before it, was refuted: README).
  assert plain["fix"]["overrides"] == {"config.gce_q": 0.7} and "options" not in plain["fix"]


def test_an_unreadable_file_or_a_missing_package_skips_the_check(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  with open(os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE), "wb") as f:
    f.write(b"PK\x03\x04 torn")
  issues = label_check.label_issues(workdir)
  assert issues["flagged"] == 0 and "cannot be read" in issues["skipped"]
  _predictions(workdir, swapped=0.3)
  import builtins  # pylint: disable=import-outside-toplevel
  real_import = builtins.__import__
  monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                      if name.startswith("cleanlab") else real_import(name, *a, **k))
  assert "pip install cleanlab" in label_check.label_issues(workdir)["skipped"]


def test_training_leaves_out_the_listed_examples_and_a_bad_list_is_named(tiny_config, tmp_path):
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  full = loading.load_data(tiny_config)[1]["train"]
  listing = tmp_path / "label_issues.json"
  listing.write_text('{"indices": [0, 5, 5, 1079]}')
  tiny_config.data.exclude_train_examples = str(listing)
  kept = loading.load_data(tiny_config)[1]["train"]
  keep = np.setdiff1d(np.arange(len(full["label"])), [0, 5, 1079])
  assert np.array_equal(kept["label"], full["label"][keep]) and np.array_equal(kept["image"], full["image"][keep])
  listing.write_text('{"indices": [1080]}')
  with pytest.raises(ValueError, match=r"every index must be an integer in \[0, 1080\)"):
    loading.load_data(tiny_config)
  listing.write_text('[1, 2]')
  with pytest.raises(ValueError, match="expected a JSON object with a list of training indices"):
    loading.load_data(tiny_config)
  tiny_config.data.exclude_train_examples = str(tmp_path / "missing.json")
  with pytest.raises(FileNotFoundError, match="no such file"):
    loading.load_data(tiny_config)


def test_training_relabels_the_listed_examples_and_a_bad_list_is_named(tiny_config, tmp_path):
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  full = loading.load_data(tiny_config)[1]["train"]
  listing = tmp_path / "label_issues.json"
  new = [(int(full["label"][i]) + 1) % 10 for i in (0, 7)]
  listing.write_text(json.dumps({"indices": [0, 7], "labels": new}))
  tiny_config.data.relabel_train_examples = str(listing)
  relabelled = loading.load_data(tiny_config)[1]["train"]
  expected = full["label"].copy()
  expected[[0, 7]] = new
  assert np.array_equal(relabelled["label"], expected) and np.array_equal(relabelled["image"], full["image"])
  for text, message in (('{"indices": [0, 1], "labels": [2]}', "lists of the same length"),
                        ('{"indices": [0], "labels": [10]}', r"every label must be a class index in \[0, 10\)"),
                        ('{"indices": [1080], "labels": [1]}', r"distinct integer in \[0, 1080\)"),
                        ('{"indices": [1, 2]}', "run `python -m cnn_val.doctor --workdir=RUN` again")):
    listing.write_text(text)
    with pytest.raises(ValueError, match=message):
      loading.load_data(tiny_config)


_TRANSITION = ((0.7, 0.3, 0.0, 0.0), (0.0, 0.8, 0.2, 0.0), (0.1, 0.1, 0.7, 0.1), (0.0, 0.0, 0.0, 1.0))


def _one_batch(tiny_config, seed):
  """A 4-class model's first state and 16 random images with labels: `grads(**loss_terms)` is `steps._grads` on
  them (dropout key 1), `probs` the train-mode softmax computed apart, in float64 (dropout draws the same masks
  for the same key), `loss_of(params, weights)` the mean cross-entropy with each example's weight."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from cnn_val import models, steps  # pylint: disable=import-outside-toplevel
  model = models.create_model(tiny_config.model, 4)
  state = steps.create_train_state(model, optax.adam(1e-3), jax.random.key(0), (28, 28, 1))
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 4, 16).astype(np.int32)
  apply = lambda params: model.apply({"params": params}, images, train=True, example_ids=np.arange(16),
                                     rngs={"dropout": jax.random.key(1)})
  logits = np.asarray(apply(state.params), np.float64)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  return types.SimpleNamespace(
      state=state, labels=labels, probs=probs / probs.sum(1, keepdims=True),
      grads=lambda **terms: steps._grads(state.params, state.batch_stats, images, labels, np.arange(16),
                                         jax.random.key(1), model=model, class_weights=None, **terms),
      loss_of=lambda params, weights: jnp.mean(weights * optax.softmax_cross_entropy_with_integer_labels(
          apply(params).astype(jnp.float32), labels)))


def test_the_forward_corrected_loss(tiny_config):
  """-log (softmax(z) @ T)[given label], checked by hand; the identity is plain cross-entropy (loss and
  gradients); accuracy counts the model's own logits."""
  import jax  # pylint: disable=import-outside-toplevel
  batch = _one_batch(tiny_config, 0)
  plain_loss, plain_grads, plain_correct, _ = batch.grads(noise_transition=None)
  eye_loss, eye_grads, _, _ = batch.grads(noise_transition=tuple(tuple(float(i == j) for j in range(4))
                                                                 for i in range(4)))
  np.testing.assert_allclose(eye_loss, plain_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(eye_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  expected = -np.mean(np.log((batch.probs @ np.asarray(_TRANSITION))[np.arange(16), batch.labels]))
  loss, _, correct, _ = batch.grads(noise_transition=_TRANSITION)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert abs(float(loss) - float(plain_loss)) > 1e-3 and int(correct) == int(plain_correct)


def test_a_bad_noise_transition_file_is_named(tmp_path):
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  path = tmp_path / "noise_transition.json"
  path.write_text(json.dumps({"transition": [[0.8, 0.2], [0.1, 0.9]]}))
  np.testing.assert_allclose(loading.noise_transition(str(path), 2), [[0.8, 0.2], [0.1, 0.9]])
  path.write_text(json.dumps({"transition": [[0.796, 0.2], [0.1, 0.9]]}))  # rounded: renormalised
  np.testing.assert_allclose(loading.noise_transition(str(path), 2).sum(1), 1.0)
  for matrix, message in (([[0.8, 0.2], [0.1, 0.9]], r"expected a 3 x 3 matrix \(these data have 3 classes\)"),
                          ([[1.2, -0.2, 0], [0, 1, 0], [0, 0, 1]], "probabilities >= 0"),
                          ([[0.5, 0.2, 0], [0, 1, 0], [0, 0, 1]], r"rows \[0\] sum to \[0.7\]"),
                          ([[0.3, 0.7, 0], [0, 1, 0], [0, 0, 1]], r"not so for classes \[0\]. Is the matrix transposed"),
                          ("abc", "expected a 3 x 3 matrix")):
    path.write_text(json.dumps({"transition": matrix}))
    with pytest.raises(ValueError, match=message):
      loading.noise_transition(str(path), 3)
  path.write_text("[1]")
  with pytest.raises(ValueError, match="config.data.noise_transition=.*expected a JSON object"):
    loading.noise_transition(str(path), 3)
  with pytest.raises(FileNotFoundError, match="no such file. It is the doctor's noise_transition.json"):
    loading.noise_transition(str(tmp_path / "missing.json"), 3)


def test_a_memorised_run_says_whose_outputs_the_listing_read(tmp_path):
  """A run that memorised its wrong labels by the end: the listing from the best checkpoint's outputs (the model
  before it memorised) is named as such; one from the final weights is said to undercount."""
  rows = _rows(epochs=10, train_acc=(0.45, 0.76), val_acc=(0.83, 0.84))
  for row, measured in zip(rows, [0.66, 0.62, 0.67, 0.70, 0.72, 0.75, 0.78, 0.80, 0.82, 0.83]):
    row["train_eval_accuracy"], row["train_eval_loss"] = measured, 0.5
  explanation = {}
  for name, source in (("best", ("best", rows[1]["step"])), ("final", ("latest", rows[-1]["step"])),
                       ("best_is_last", ("best", rows[-1]["step"]))):
    _predictions(str(tmp_path / name), swapped=0.3, source=source)
    result = _run(tmp_path / name, rows)
    finding = next(f for f in result["findings"] if f["cause"] == "label_noise")
    assert finding["evidence"]["memorised_by_the_end"] and finding["evidence"]["likely_wrong_labels"]["flagged"]
    explanation[name] = finding["explanation"]
  assert "the listing below reads the best checkpoint's outputs, which had memorised fewer" in explanation["best"]
  assert f"on the outputs of the best checkpoint's weights (step {rows[1]['step']})" in explanation["best"]
  for name in ("final", "best_is_last"):  # the final weights, however the file names them
    assert "a listing from the final model's outputs undercounts it" in explanation[name]
    assert "which had memorised fewer" not in explanation[name]


def test_the_generalized_cross_entropy(tiny_config):
  """Each example's gradient is the cross-entropy's times p^q, p the label's probability (on its own, and through
  the noise with forward correction), q -> 0 the cross-entropy's gradient; the loss reported stays the
  cross-entropy (what `train_loss` logs and the doctor reads on its ln K scale)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cnn_val import steps  # pylint: disable=import-outside-toplevel
  batch = _one_batch(tiny_config, 1)
  for q, matrix in ((0.7, None), (1.0, None), (0.7, _TRANSITION)):
    given = (batch.probs if matrix is None else batch.probs @ np.asarray(matrix))[np.arange(16), batch.labels]
    loss, _, _, _ = batch.grads(gce_q=q, noise_transition=matrix)
    np.testing.assert_allclose(loss, np.mean(-np.log(given)), rtol=1e-5)
  np.testing.assert_allclose(steps.generalized_cross_entropy(jnp.asarray([0.0, 0.5, 3.0]), 0.7),
                             (1 - np.exp(-0.7 * np.array([0.0, 0.5, 3.0]))) / 0.7, rtol=1e-6)
  ce_loss, ce_grads, _, _ = batch.grads(gce_q=0.0)
  small_loss, small_grads, _, _ = batch.grads(gce_q=1e-4)
  np.testing.assert_allclose(small_loss, ce_loss, rtol=1e-3)
  for a, b in zip(jax.tree.leaves(small_grads), jax.tree.leaves(ce_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3 * np.abs(b).max())
  # The gradient: the cross-entropy's, each example weighted by its p^q (held constant).
  weights = jnp.asarray(batch.probs[np.arange(16), batch.labels] ** 0.7, jnp.float32)
  _, gce_grads, _, _ = batch.grads(gce_q=0.7)
  weighted = jax.grad(batch.loss_of)(batch.state.params, weights)
  for a, b in zip(jax.tree.leaves(gce_grads), jax.tree.leaves(weighted)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * np.abs(b).max())
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(gce_grads), jax.tree.leaves(ce_grads))) > 0


def test_a_run_trains_on_the_generalized_cross_entropy(tiny_config, tmp_path):
  """gce_q reaches the train step: the same seed and batches train other weights than on the cross-entropy
  (what the step logs as the loss, the cross-entropy either way, is `test_the_generalized_cross_entropy`'s); a q
  outside [0, 1] is refused by name."""
  from cnn_val import config_check, rundir, train  # pylint: disable=import-outside-toplevel
  tiny_config.num_epochs = 1
  rows = {}
  for q in (0.7, 0.0):
    tiny_config.gce_q = q
    train.train_and_evaluate(tiny_config, str(tmp_path / f"q{q}"))
    rows[q] = rundir.read_metrics(str(tmp_path / f"q{q}"))[0]
  assert rows[0.7]["val_loss"] != rows[0.0]["val_loss"] and rows[0.7]["train_loss"] != rows[0.0]["train_loss"]
  for bad in (1.5, -0.1, float("nan")):
    tiny_config.gce_q = bad
    with pytest.raises(ValueError, match="gce_q"):
      config_check.validate(tiny_config)


def _drift(train_means: dict, threes: float = 0.25, sd: float = 0.05) -> dict:
  """audit.json's class_drift for brightness alone: every class at 0.20 in validation but class 3 (`threes`) and 5
  (0.10), its training means as given (else the validation mean), one pooled standard deviation `sd`."""
  other = {str(c): {"brightness": {3: threes, 5: 0.10}.get(c, 0.20)} for c in range(K)}
  train = {str(c): {"brightness": train_means.get(c, other[str(c)]["brightness"])} for c in range(K)}
  per_class = {str(c): {"brightness": round((other[str(c)]["brightness"] - train[str(c)]["brightness"]) / sd, 4)}
               for c in range(K)}
  c, smd = max(((c, v["brightness"]) for c, v in per_class.items()), key=lambda cv: abs(cv[1]))
  return {"validation": {"per_class_smd": per_class, "per_class_mean": {"train": train, "other": other},
                         "worst": {"class": int(c), "statistic": "brightness", "smd": smd,
                                   "train_mean": train[c]["brightness"], "other_mean": other[c]["brightness"]}}}


@pytest.mark.parametrize("case", ["noise", "no_predictions", "both", "partly", "implausible"])
def test_a_class_mean_that_wrong_labels_move_is_not_a_shortcut(tmp_path, case):
  """30% of class 3's labels given as 5 put bright 3s among the dark 5s: class 5's training images are brighter
  than its validation images (0.7 standard deviations, as pair noise on the digits moves the 1s) with no lighting
  changed. With the training predictions, confident learning's estimate of where class 5's labels come from
  accounts for it (conservatively: 10% threes where 23% are, which leaves 0.4), and no shortcut is named; a class
  whose own images differ (class 7, darker in training) still is, by what the noise leaves of it, though class 5's
  raw difference is larger; a difference the noise explains only in part is sized by what is left; an estimate
  that most of a label's images are another class's (a model that predicts one class) discounts nothing."""
  threes = 0.40 if case == "partly" else 0.25
  mixed = (200 * 0.10 + 60 * threes) / 260  # class 5's training images: 200 fives and 60 threes
  audit_dict = _audit(drift_ks=0.01)
  audit_dict["class_drift"] = _drift({5: mixed, **({7: 0.17} if case == "both" else {})}, threes)
  workdir = str(tmp_path)
  if case != "no_predictions":
    _predictions(workdir, swapped=0.3)
  if case == "implausible":  # every output on class 0
    rundir.write_npz(workdir, rundir.TRAIN_PREDICTIONS_FILE, probs=np.tile(np.eye(K)[0] * 0.9 + 0.01, (2000, 1)),
                     labels=(np.arange(2000) % K).astype(np.int32), index=np.arange(2000))
  result = _run(tmp_path, None, audit_dict)
  shift = next((f for f in result["findings"] if f["cause"] == "distribution_shift"), None)
  if case == "noise":
    assert shift is None
    return
  evidence = shift["evidence"]
  if case in ("no_predictions", "implausible"):  # the difference alone, as before the estimate
    assert evidence["class"] == 5 and evidence["smd"] == pytest.approx(-0.6923, abs=1e-3)
    assert evidence.get("smd_after_label_noise", evidence["smd"]) == evidence["smd"]
    assert ("smd_after_label_noise" in evidence) == (case == "implausible")
  elif case == "both":
    assert evidence["class"] == 7 and evidence["smd"] == pytest.approx(0.6) and shift["severity"] == "medium"
    assert evidence["smd_after_label_noise"] == pytest.approx(0.6, abs=0.05)  # its labels are its own
    assert "training images of class c7 differ from its validation images in brightness" in shift["explanation"]
  else:
    assert evidence["class"] == 5 and evidence["smd"] == pytest.approx(-1.3846, abs=1e-3)  # high by itself
    assert 0.5 < -evidence["smd_after_label_noise"] < 1.0 and shift["severity"] == "medium"
    assert "once the label noise estimated from the training predictions is accounted for" in shift["explanation"]

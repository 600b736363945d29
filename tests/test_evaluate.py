"""`cnn_val.evaluate`: a run directory's checkpoint evaluated without training reproduces what training recorded."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from cnn_val import evaluate, rundir, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _validation_reads(monkeypatch, accuracies):
  """Training's validation evaluations report `accuracies` in turn (the other splits are evaluated as usual):
  a run whose last evaluation is not its best, made to order."""
  from cnn_val import training_run  # pylint: disable=import-outside-toplevel
  reads = iter(accuracies)
  real = training_run.evaluate

  def evaluate(*args, split_name, **kwargs):
    result = real(*args, split_name=split_name, **kwargs)
    return {**result, "accuracy": next(reads)} if split_name == "validation" else result

  monkeypatch.setattr(training_run, "evaluate", evaluate)


def test_the_best_checkpoint_reproduces_the_recorded_validation_accuracy(tiny_config, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  workdir = str(tmp_path)
  tiny_config.num_epochs = 3
  train.train_and_evaluate(tiny_config, workdir)
  rows = rundir.read_metrics(workdir)
  best = max(rows, key=lambda r: (r["val_accuracy"], r["step"]))
  assert f"Done: best validation accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']} of 3" in caplog.text
  result = evaluate.evaluate_checkpoint(workdir, "best", "validation")
  assert result["step"] == best["step"] and result["accuracy"] == best["val_accuracy"]
  assert result["count"] == 120
  best_test = evaluate.evaluate_checkpoint(workdir, "best", "test")  # recorded at the end of the run too
  assert rows[-1]["best_checkpoint_test_accuracy"] == best_test["accuracy"]
  assert rows[-1]["best_checkpoint_step"] == best["step"]
  latest = evaluate.evaluate_checkpoint(workdir, "latest", "test")
  assert latest["accuracy"] == rows[-1]["test_accuracy"] and latest["step"] == rows[-1]["step"]
  out = subprocess.run([sys.executable, "-m", "cnn_val.evaluate", f"--workdir={workdir}", "--split=validation"],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert json.loads(out)["accuracy"] == best["val_accuracy"]
  assert "ema_val_accuracy" not in rows[-1]  # trained without a moving average: none to evaluate
  with pytest.raises(ValueError, match="--weights=ema: .* without a moving average"):
    evaluate.evaluate_checkpoint(workdir, "latest", "validation", weights="ema")
  # The doctor's label-check file, as training wrote it (from the best checkpoint's weights) and as that
  # checkpoint gives it back.
  path = os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE)
  with np.load(path) as f:
    written = {k: f[k] for k in f.files}
  assert written["probs"].shape == (1080, 10) and np.array_equal(written["index"], np.arange(1080))
  assert int(written["step"]) == best["step"]
  assert str(written["checkpoint"]) == ("latest" if best["step"] == rows[-1]["step"] else "best")
  os.remove(path)
  evaluate.write_train_predictions(workdir)
  with np.load(path) as f:
    np.testing.assert_allclose(f["probs"], written["probs"], atol=1e-3)  # float16
    assert np.array_equal(f["labels"], written["labels"]) and np.array_equal(f["index"], written["index"])
    assert int(f["step"]) == best["step"] and str(f["checkpoint"]) == str(written["checkpoint"])


def test_the_label_check_reads_the_best_checkpoint_where_the_run_went_on_past_it(tiny_config, tmp_path,
                                                                                 monkeypatch):
  """A run whose last evaluation is not its best (here its validation accuracy is made to fall: a model that
  goes on to memorise wrong labels) writes the training outputs of its best checkpoint, the model before it
  memorised; the doctor's listing says which weights it read."""
  from cnn_val.doctor import label_check  # pylint: disable=import-outside-toplevel
  _validation_reads(monkeypatch, [0.9, 0.5, 0.4])
  workdir = str(tmp_path)
  tiny_config.num_epochs = 3
  train.train_and_evaluate(tiny_config, workdir)
  rows = rundir.read_metrics(workdir)
  assert [r["val_accuracy"] for r in rows] == [0.9, 0.5, 0.4]
  assert rows[-1]["best_checkpoint_step"] == rows[0]["step"]
  path = os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE)
  with np.load(path) as f:
    written = {k: f[k] for k in f.files}
  assert str(written["checkpoint"]) == "best" and int(written["step"]) == rows[0]["step"]
  monkeypatch.undo()
  os.remove(path)
  evaluate.write_train_predictions(workdir, "best")  # the best checkpoint's outputs, as training wrote them
  with np.load(path) as f:
    np.testing.assert_allclose(f["probs"], written["probs"], atol=1e-3)
  evaluate.write_train_predictions(workdir, "latest")  # the final weights' differ
  with np.load(path) as f:
    assert int(f["step"]) == rows[-1]["step"] and str(f["checkpoint"]) == "latest"
    assert np.abs(f["probs"].astype(float) - written["probs"].astype(float)).max() > 1e-2
  issues = label_check.label_issues(workdir)
  assert issues["predictions_from"] == {"checkpoint": "latest", "step": rows[-1]["step"]}
  assert issues["weights"] == f"the final weights (step {rows[-1]['step']})"


def test_a_directory_without_checkpoints_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    evaluate.evaluate_checkpoint(str(tmp_path))
  result = subprocess.run([sys.executable, "-m", "cnn_val.evaluate", f"--workdir={tmp_path}", "--checkpoint=first"],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2 and "Traceback" not in result.stderr and "--checkpoint" in result.stderr


def test_the_moving_average_is_evaluated_alongside_and_from_the_checkpoint(tiny_config, tmp_path):
  """config.ema_decay: metrics.jsonl holds the averaged weights' validation and test accuracy beside the
  trained ones', and `--weights=ema` reproduces them from the checkpoint (a run without it is refused: above)."""
  workdir = str(tmp_path / "ema")
  tiny_config.num_epochs = 2
  tiny_config.ema_decay = 0.9
  train.train_and_evaluate(tiny_config, workdir)
  last = rundir.read_metrics(workdir)[-1]
  assert {"ema_val_accuracy", "ema_val_loss", "ema_test_accuracy", "ema_test_loss"} <= set(last)
  assert last["ema_val_loss"] != last["val_loss"]  # other weights
  result = evaluate.evaluate_checkpoint(workdir, "latest", "validation", weights="ema")
  assert result["accuracy"] == last["ema_val_accuracy"] and result["loss"] == pytest.approx(last["ema_val_loss"])
  trained = evaluate.evaluate_checkpoint(workdir, "latest", "validation")
  assert trained["accuracy"] == last["val_accuracy"]


def test_a_best_checkpoint_that_cannot_be_restored_costs_only_the_extras(tiny_config, tmp_path, monkeypatch,
                                                                          caplog):
  """The best checkpoint corrupt at the end of the run: the run finishes with its own results, the label check
  reads the final weights (and says so), and no best-checkpoint test accuracy is claimed."""
  from cnn_val import checkpoint  # pylint: disable=import-outside-toplevel
  caplog.set_level(logging.WARNING)
  _validation_reads(monkeypatch, [0.9, 0.5])

  def corrupt(self, abstract_state):
    raise checkpoint.CorruptCheckpointError("checkpoints/best/1 holds different bytes than were saved")

  monkeypatch.setattr(checkpoint.Checkpoints, "restore_best", corrupt)
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config, workdir)
  rows = rundir.read_metrics(workdir)
  assert [r["epoch"] for r in rows] == [1, 2] and "test_accuracy" in rows[-1]
  assert "best_checkpoint_test_accuracy" not in rows[-1] and "best_checkpoint_step" not in rows[-1]
  assert "The best checkpoint cannot be restored (checkpoints/best/1 holds different bytes" in caplog.text
  with np.load(os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE)) as f:
    assert str(f["checkpoint"]) == "latest" and int(f["step"]) == rows[-1]["step"]

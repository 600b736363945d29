"""TensorBoard holds the whole story: per-step training scalars, the per-epoch metrics, the doctor's verdict
and report as text and its plots as images, the config in the HParams view (read back from the event files)."""

import glob
import json
import os
import sys

import pytest
import tensorflow as tf

from cnn_val import train


def _events(workdir):
  tags = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append((event.step, value))
  return tags


def test_event_files_hold_per_step_scalars_and_the_doctors_findings_and_plots(tiny_config, tmp_path):
  tiny_config.doctor = True
  tiny_config.num_epochs = 2
  tiny_config.log_every_steps = 10
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config, workdir)
  tags = _events(workdir)
  steps = [step for step, _ in tags["train/loss"]]
  assert steps == list(range(10, 2 * (1080 // 32) + 1, 10))  # every logging interval, not once an epoch
  assert {"train/accuracy", "train/lr", "val_accuracy", "train_eval_accuracy"} <= set(tags)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [(step, float(tf.make_ndarray(value.tensor))) for step, value in tags["val_accuracy"]] == [
      (row["step"], pytest.approx(row["val_accuracy"])) for row in rows]
  assert tags["val_accuracy"][0][1].metadata.plugin_data.plugin_name == "scalars"
  verdict = tags["doctor/verdict"][0][1]
  assert tf.make_ndarray(verdict.tensor).item().decode().startswith(("healthy", "problems_found"))
  assert "# cnn_val report" in tf.make_ndarray(tags["doctor/report"][0][1].tensor).item().decode()
  image = tags["doctor/learning_curves"][0][1]
  assert image.metadata.plugin_data.plugin_name == "images"
  # The config in the HParams view (what a sweep's runs line up by).
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=import-outside-toplevel
  session = plugin_data_pb2.HParamsPluginData.FromString(
      tags["_hparams_/session_start_info"][0][1].metadata.plugin_data.content).session_start_info
  assert session.hparams["optim.learning_rate"].number_value == tiny_config.optim.learning_rate
  assert session.hparams["model.name"].string_value == tiny_config.model.name
  assert session.hparams["seed"].number_value == tiny_config.seed


def test_a_profiler_trace_on_request(tiny_config, tmp_path):
  tiny_config.num_epochs = 1
  tiny_config.profile_steps = 5
  train.train_and_evaluate(tiny_config, str(tmp_path))
  traces = glob.glob(os.path.join(str(tmp_path), "profile", "plugins", "profile", "*", "*"))
  assert traces and any(t.endswith((".xplane.pb", ".trace.json.gz")) for t in traces)


def test_without_tensorboard_a_run_keeps_its_metrics_and_says_so(monkeypatch, tmp_path, caplog):
  import cnn_val  # pylint: disable=import-outside-toplevel
  from cnn_val import rundir  # pylint: disable=import-outside-toplevel
  monkeypatch.setitem(sys.modules, "cnn_val.summaries", None)  # as if the tensorboard package were missing
  monkeypatch.delattr(cnn_val, "summaries", raising=False)
  monkeypatch.setattr(rundir, "_WARNED_NO_TENSORBOARD", False)
  writer = rundir.MetricsWriter(str(tmp_path))
  writer.write({"step": 1, "val_accuracy": 0.5})
  writer.close()
  assert os.listdir(tmp_path) == [rundir.METRICS_FILE]
  assert "No TensorBoard summaries" in caplog.text and "pip install tensorboard" in caplog.text

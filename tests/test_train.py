"""The training core end to end on tiny data: steps, device-count invariance, kill-and-resume, NaN, errors."""

import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnn_val import ablate, config_fields, models, optim, rundir, steps, train
from cnn_val.configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bn_convnet(config):
  """A small ConvNet with batchnorm and dropout: exercises synchronised BN and per-example dropout."""
  config.model.name = "ConvNet"
  config.model.widths = (8, 16)
  config.model.batchnorm = True
  config.model.block_dropout_rate = 0.1
  config.model.hidden_units = 16
  config.model.dropout_rate = 0.3
  return config


def test_one_train_step_and_eval_step_on_four_devices(tiny_config):
  config = _bn_convnet(tiny_config)
  tx = optim.create_optimizer(config.optim, 10, 1)
  state = steps.create_train_state(models.create_model(config.model, 10), tx, jax.random.key(0), (28, 28, 1))
  config.batch_size = 8
  p_train, p_eval, _, _ = steps.pmapped_steps(config, 10, tx, jax.local_devices()[:4])
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 255, (4, 2, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, (4, 2)).astype(np.int32)}
  new_state, metrics = p_train(state, batch, jax.random.key(1))
  assert int(new_state.step) == 1 and int(metrics["count"]) == 8 and int(metrics["nonfinite_steps"]) == 0
  assert not np.allclose(new_state.params["Dense_1"]["kernel"], state.params["Dense_1"]["kernel"])
  np.testing.assert_allclose(float(metrics["loss_sum"]) / 8, np.log(10), rtol=0.5)
  mask = np.array([[True, True]] * 3 + [[True, False]])
  out = p_eval(new_state, {**batch, "mask": mask})
  assert float(out["count"]) == 7 and int(out["confusion"].sum()) == 7


def _run(config, workdir):
  row = train.train_and_evaluate(config, str(workdir))
  return row, rundir.read_metrics(str(workdir))


def test_four_devices_match_one_device(tiny_config, tmp_path):
  config = _bn_convnet(tiny_config)
  config.batch_size = 40
  config.eval_batch_size = 40
  rows = {}
  for n in (1, 4):
    config.num_devices = n
    _, rows[n] = _run(config, tmp_path / f"dev{n}")
  assert len(rows[1]) == 2
  for one, four in zip(rows[1], rows[4]):
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm", "train_eval_accuracy"):
      np.testing.assert_allclose(four[key], one[key], rtol=2e-4, atol=1e-5, err_msg=key)
  np.testing.assert_allclose(rows[4][-1]["test_accuracy"], rows[1][-1]["test_accuracy"], atol=1e-6)


def test_training_learns_and_writes_the_run_directory(tiny_config, tmp_path):
  tiny_config.num_epochs = 3
  row, rows = _run(tiny_config, tmp_path)
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert rows[-1]["val_accuracy"] > 0.9 and rows[-1]["train_loss"] < rows[0]["train_loss"]  # learns the bars
  for key in ("step", "epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "train_eval_loss",
              "train_eval_accuracy"):
    assert key in rows[0]
  assert row == rows[-1] and "test_accuracy" in row and "test_accuracy" not in rows[0]
  assert rows[-1]["step"] == 3 * (1080 // 32)
  assert sum(rows[-1]["val_pred_histogram"]) == 120
  assert json.load(open(tmp_path / "config.json"))["model"]["name"] == "SeedCNNDropout"
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))
  assert not (tmp_path / rundir.AUGMENT_CHECK_FILE).exists()  # no augmentation: no augmentation check
  assert sorted(os.listdir(tmp_path / "checkpoints" / "latest"), key=int) == [str(r["step"]) for r in rows[-2:]]
  best_step = max(rows, key=lambda r: (r["val_accuracy"], r["step"]))["step"]  # a tie keeps the later one
  assert os.listdir(tmp_path / "checkpoints" / "best") == [str(best_step)]
  # Running the same command on a finished run changes nothing, and says so (no new TensorBoard file).
  events = sorted(n for n in os.listdir(tmp_path) if n.startswith("events.out.tfevents"))
  again, rows_again = _run(tiny_config, tmp_path)
  assert again == row and rows_again == rows
  assert sorted(n for n in os.listdir(tmp_path) if n.startswith("events.out.tfevents")) == events


def _main_command(workdir, data_dir, epochs):
  return [sys.executable, "-m", "cnn_val.main", "--config=configs/default.py", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", "--config.data.download=False", "--config.num_devices=1",
          f"--config.num_epochs={epochs}", "--config.batch_size=16", "--config.log_every_steps=1",
          "--config.optim.decay_steps=40", "--config.preflight=False", "--config.doctor=False"]


def cached_env(tmp_path) -> dict:
  """The environment for the launches of one test: they share XLA's compilations (JAX's persistent cache)."""
  return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}


def logged_step(line: str) -> int:
  """The step of a progress line ("step N/TOTAL ..."), else -1. Fused chunks log at their last step, so tests
  wait for the first step at or past a target rather than for one exact step."""
  match = re.search(r"\bstep (\d+)/\d+", line)
  return int(match.group(1)) if match else -1


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(tiny_data_dir, tmp_path):
  """SIGKILL mid-epoch, start again with the same command: the metrics equal an uninterrupted run's."""
  epochs = 2
  full = tmp_path / "full"
  subprocess.run(_main_command(full, tiny_data_dir, epochs), cwd=REPO, check=True, capture_output=True,
                 env=cached_env(tmp_path))

  killed = tmp_path / "killed"
  proc = subprocess.Popen(_main_command(killed, tiny_data_dir, epochs), cwd=REPO, env=cached_env(tmp_path),
                          stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True)
  steps_per_epoch = 1080 // 16
  for line in proc.stderr:  # absl logs each step; kill a few steps into epoch 2
    if logged_step(line) >= steps_per_epoch + 5:
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  interrupted = rundir.read_metrics(str(killed))
  assert [r["epoch"] for r in interrupted] == [1], "the kill should land in epoch 2"

  subprocess.run(_main_command(killed, tiny_data_dir, epochs), cwd=REPO, check=True, capture_output=True,
                 env=cached_env(tmp_path))
  resumed = rundir.read_metrics(str(killed))
  expected = rundir.read_metrics(str(full))
  assert len(expected) == epochs
  assert resumed == expected  # bit-identical on CPU with the same devices


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  tiny_config.optim.optimizer = "sgd"
  tiny_config.optim.momentum = 0.0
  tiny_config.optim.schedule = "constant"
  tiny_config.optim.learning_rate = 1e-3
  tiny_config.num_epochs = 1
  _run(tiny_config, tmp_path / "seed")
  # Continue the one-epoch run for two more epochs at an absurd learning rate: its loss must blow up.
  tiny_config.num_epochs = 3
  tiny_config.optim.learning_rate = 1e12
  workdir = tmp_path / "seed"
  os.remove(workdir / "config.json")  # same checkpoint, deliberately different config
  with pytest.raises(train.NonFiniteLossError, match=r"NaN/Inf.*last good checkpoint \(step 33\)") as error:
    _run(tiny_config, workdir)
  # The step where it happened, not the logging boundary (every 10 steps) that found it.
  assert 34 <= error.value.step < 40 and f"at step {error.value.step};" in str(error.value)
  assert os.listdir(workdir / "checkpoints" / "latest") == ["33"]
  assert [r["epoch"] for r in rundir.read_metrics(str(workdir))] == [1]


def test_resuming_with_a_different_config_is_refused(tiny_config, tmp_path):
  tiny_config.num_epochs = 1
  _run(tiny_config, tmp_path)
  tiny_config.optim.learning_rate = 0.5
  with pytest.raises(ValueError, match=r"different config \(optim.learning_rate: 0.001 -> 0.5\)"):
    _run(tiny_config, tmp_path)


def test_every_field_added_since_a_dated_snapshot_has_its_neutral_value():
  """A run made before a config field existed must stay resumable: each field of configs/default.py is either
  in the snapshot of an earlier default's fields or listed in config_fields.FIELDS_ADDED_LATER (with the value that
  reproduces what those runs trained)."""
  snapshot = os.path.join(os.path.dirname(__file__), "data", "config_fields_before_colorize.txt")
  with open(snapshot) as f:
    earlier = {line.strip() for line in f if line.strip() and not line.startswith("#")}
  current = config_fields.flatten(rundir.config_to_dict(default.get_config()))
  missing = sorted(set(current) - earlier - set(config_fields.FIELDS_ADDED_LATER))
  assert not missing, f"add these to config_fields.FIELDS_ADDED_LATER with their neutral values: {missing}"
  for field, neutral in config_fields.FIELDS_ADDED_LATER.items():
    # The default must compute what runs without the field computed; a field that changes nothing a run
    # computes (RESUMABLE_CHANGES: lr_range_test) may default otherwise.
    if field not in earlier and field not in config_fields.RESUMABLE_CHANGES:
      assert current[field] == neutral or (current[field] is None and neutral is None), field
  # Two configs that both predate a field (a sweep of an old run, checked again by a second stage) agree.
  old = rundir.config_to_dict(default.get_config())
  del old["data"]["scenario"]["colorize"], old["ema_decay"]
  assert config_fields.config_changes(old, old) == {}
  assert config_fields.config_changes(old, rundir.config_to_dict(default.get_config())) == {}


def test_batch_that_does_not_split_over_devices_is_refused(tiny_config, tmp_path):
  tiny_config.num_devices = 4
  tiny_config.batch_size = 30
  with pytest.raises(ValueError, match=r"config.batch_size=30 does not split evenly over 4 devices"):
    _run(tiny_config, tmp_path)
  assert not os.path.exists(tmp_path / "config.json")  # nothing written for a refused config


def test_bad_config_values_name_the_field(tiny_config, tmp_path):
  tiny_config.model.dropout_rate = 1.5
  with pytest.raises(ValueError, match=r"config.model.dropout_rate=1.5: expected a rate in \[0, 1\)"):
    _run(tiny_config, tmp_path)
  tiny_config.model.dropout_rate = 0.5
  tiny_config.num_devices = 64
  with pytest.raises(ValueError, match=r"config.num_devices=64, but this host has 4"):
    _run(tiny_config, tmp_path)


def test_early_stopping_ends_the_run_and_a_rerun_keeps_it_finished(tiny_config, tmp_path):
  tiny_config.num_epochs = 4
  tiny_config.optim.schedule = "constant"
  tiny_config.optim.learning_rate = 1e-12  # nothing improves after the first evaluation
  tiny_config.early_stopping_patience = 1
  tiny_config.doctor = True
  row, rows = _run(tiny_config, tmp_path)
  assert [r["epoch"] for r in rows] == [1, 2] and "test_accuracy" in row and "best_checkpoint_test_accuracy" in row
  # Early stopping counts a tie as no improvement (as Keras does); the best checkpoint keeps the later of a tie.
  assert rows[1]["val_accuracy"] == rows[0]["val_accuracy"] and row["best_checkpoint_step"] == rows[1]["step"]
  assert rundir.read_json(str(tmp_path), rundir.EARLY_STOP_FILE) == {"epoch": 2, "step": rows[1]["step"],
                                                                     "patience": 1, "best_epoch": 1}
  assert rundir.read_json(str(tmp_path), "diagnosis.json")["run"]["stopped_early"]["epoch"] == 2
  assert ablate.run_status(str(tmp_path)) == "finished"  # a sweep counts it and does not train it again
  again, rows_again = _run(tiny_config, tmp_path)  # the same command: finished, nothing trained
  assert rows_again == rows and again == row


def test_a_stop_whose_checkpoint_is_gone_is_forgotten(tiny_config, tmp_path):
  """early_stopped.json names the step the run stopped at; where the run resumes from another step (the stop's
  checkpoint lost), the epochs after are redone and the file goes, so that nothing reads the run as stopped there."""
  tiny_config.num_epochs = 2
  tiny_config.early_stopping_patience = 1
  _, rows = _run(tiny_config, tmp_path)
  rundir.write_json(str(tmp_path), rundir.EARLY_STOP_FILE, {"epoch": 1, "step": rows[0]["step"], "patience": 1,
                                                            "best_epoch": 1})  # not the step it resumes from
  _, again = _run(tiny_config, tmp_path)
  assert again == rows and rundir.read_json(str(tmp_path), rundir.EARLY_STOP_FILE) is None

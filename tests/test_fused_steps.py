"""Fused train steps over a device-resident training split (config.steps_per_call) against the per-step loop."""

import json

import numpy as np
import pytest

from cnn_val import rundir, train
from cnn_val.data import pipeline
from tests.test_train import _bn_convnet


def _bn_augmented(config):
  """BatchNorm, dropout, on-device augmentation, class weights and oversampling: every path a step takes."""
  config = _bn_convnet(config)
  config.augment.preset = "characters"
  config.imbalance.class_weighting = "inverse"
  config.imbalance.resampling = "oversample"
  config.data.max_train_examples = 320
  config.ema_decay = 0.99  # the moving average of weights and BatchNorm statistics, updated inside the chunk
  return config


@pytest.mark.parametrize("case, devices, per_call", [("seed_model", 2, 7), ("bn_augmented", 1, 0)])
def test_fused_chunks_write_the_per_step_loops_metrics_bit_for_bit(tiny_config, tmp_path, case, devices, per_call):
  config = _bn_augmented(tiny_config) if case == "bn_augmented" else tiny_config
  if case == "seed_model":  # a long tail, the loss adjusted by its prior (balance.logit_offsets) and
    config.data.scenario.imbalance_ratio = 4.0  # forward-corrected for label noise (steps.forward_corrected_losses)
    config.imbalance.logit_adjustment = 1.0
    transition = np.eye(10) * 0.8 + np.roll(np.eye(10), 1, axis=1) * 0.2
    (tmp_path / "noise_transition.json").write_text(json.dumps({"transition": transition.tolist()}))
    config.data.noise_transition = str(tmp_path / "noise_transition.json")
    config.imbalance.class_weighting, config.imbalance.deferred_epochs = "inverse", 1  # weights from epoch 2 on
  config.num_devices = devices
  config.num_epochs = 1 if case == "bn_augmented" else 2  # the seed model's case covers a second epoch's order
  rows = {}
  for k in (1, per_call):
    config.steps_per_call = k
    train.train_and_evaluate(config, str(tmp_path / f"k{k}"))
    rows[k] = rundir.read_metrics(str(tmp_path / f"k{k}"))
  assert len(rows[1]) == config.num_epochs
  assert rows[per_call] == rows[1]  # every field of every epoch, training sums included
  timing = rundir.read_json(str(tmp_path / f"k{per_call}"), rundir.TIMING_FILE)
  phases = timing["phases"]
  assert {"load data", "first train call (compilation)", "train steps", "validation", "test",
          "checkpoints", "training split to the device"} <= set(phases)
  assert all(v >= 0 for v in phases.values())
  assert abs(sum(phases.values()) + timing["other_seconds"] - timing["total_seconds"]) < 0.01


def test_train_indices_are_the_batches_the_host_pipeline_gathers():
  rng = np.random.default_rng(0)
  arrays = {"image": rng.integers(0, 255, (103, 4, 4, 1), dtype=np.uint8),
            "label": rng.integers(0, 3, 103).astype(np.int32)}
  kw = dict(global_batch=20, num_devices=2, seed=3, epoch=1, num_classes=3, resampling="oversample")
  indices = pipeline.train_indices(arrays["label"], **kw)
  batches = list(pipeline.train_batches(arrays, **kw))
  assert indices.shape == (len(batches), 2, 10) and indices.dtype == np.int32
  for idx, batch in zip(indices, batches):
    np.testing.assert_array_equal(arrays["image"][idx], batch["image"])
    np.testing.assert_array_equal(arrays["label"][idx], batch["label"])


def test_a_split_too_big_for_the_device_falls_back_to_host_batches(tiny_config, monkeypatch, caplog):
  import jax
  arrays = {"image": np.zeros((1000, 28, 28, 1), np.uint8), "label": np.zeros(1000, np.int32)}
  tiny_config.steps_per_call = 0
  assert train.steps_per_call(tiny_config, arrays, jax.local_devices()[:1]) == train.AUTO_STEPS_PER_CALL
  monkeypatch.setattr(train, "DEVICE_DATA_MAX_BYTES", 1000)
  assert train.steps_per_call(tiny_config, arrays, jax.local_devices()[:1]) == 1
  tiny_config.steps_per_call = 10
  with caplog.at_level("WARNING"):
    assert train.steps_per_call(tiny_config, arrays, jax.local_devices()[:1]) == 1
  assert "does not fit" in caplog.text and "step by step" in caplog.text


def test_preflight_checks_give_the_same_values_in_one_call_or_in_blocks(tiny_config, monkeypatch):
  from cnn_val import preflight  # pylint: disable=import-outside-toplevel
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  splits, arrays = loading.load_data(tiny_config)
  monkeypatch.setattr(preflight, "OVERFIT_STEPS", 20)  # the checks' values need not pass here, only agree
  whole = preflight.run_checks(tiny_config, arrays, splits.num_classes, splits.image_shape)
  # Large images: the 20 steps of each check run 5 to a call, with the same steps in the same order.
  monkeypatch.setattr(preflight, "FUSED_BYTES", 5 * preflight.OVERFIT_BATCH * arrays["train"]["image"][:1].nbytes)
  blocks = preflight.run_checks(tiny_config, arrays, splits.num_classes, splits.image_shape)
  for a, b in zip(whole["checks"], blocks["checks"]):
    assert a["name"] == b["name"] and a["passed"] == b["passed"]
    assert a["value"] == pytest.approx(b["value"], rel=1e-4, abs=1e-6), a["name"]

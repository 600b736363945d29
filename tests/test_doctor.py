"""Audit on real images, the LR range test's suggestion, pre-flight checks, and the doctor end to end."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from cnn_val import audit, config_fields, doctor, lr_range, preflight, rundir, train
from cnn_val.data import loading, scenarios
from cnn_val.doctor import data_rules
from cnn_val.configs import default
from tests.conftest import real_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _real_splits(n_train=3000, n_val=1000):
  images = real_images(n_train + n_val)
  labels = np.random.default_rng(0).integers(0, 10, len(images)).astype(np.int32)  # labels do not matter here
  return {"train": {"image": images[:n_train], "label": labels[:n_train]},
          "validation": {"image": images[n_train:], "label": labels[n_train:]}}


def test_same_distribution_splits_pass_and_a_lighting_shift_is_drift():
  splits = _real_splits()
  report = audit.audit(splits, 10)
  drift = report["drift"]["validation"]
  assert all(drift[s]["ks"] < audit.DRIFT_KS for s in audit.STATS)
  assert report["splits"]["train"]["image_shape"] == list(splits["train"]["image"].shape[1:])  # the lever menu's
  darker = {**splits, "train": {**splits["train"], "image": (splits["train"]["image"] * 0.6).astype(np.uint8)}}
  drift = audit.audit(darker, 10)["drift"]["validation"]
  assert drift["brightness"]["ks"] > 3 * audit.DRIFT_KS
  assert drift["brightness"]["standardized_mean_difference"] > 0  # validation is brighter


def test_class_mix_alone_is_not_drift():
  """Dropping most examples of the brightest classes changes train's brightness only through the class mix."""
  images = real_images(6000)
  labels = np.asarray(_fashion_labels(6000))
  splits = {"train": {"image": images[:5000], "label": labels[:5000]},
            "validation": {"image": images[5000:], "label": labels[5000:]}}
  keep = np.isin(splits["train"]["label"], [1, 5, 7, 9]) | (np.arange(5000) % 20 == 0)
  skewed = {**splits, "train": {k: v[keep] for k, v in splits["train"].items()}}
  assert audit.audit(skewed, 10)["drift"]["validation"]["brightness"]["ks"] < audit.DRIFT_KS
  unweighted = audit.ks_distance(audit.image_stats(skewed["train"]["image"])["brightness"],
                                 audit.image_stats(skewed["validation"]["image"])["brightness"])
  assert unweighted > audit.DRIFT_KS  # without class matching it would have been called drift


def _fashion_labels(n):
  import gzip
  from cnn_val.data import fashion_mnist_offline
  with gzip.open(fashion_mnist_offline.local_files()["train_labels"], "rb") as f:
    f.read(8)
    return np.frombuffer(f.read(n), np.uint8).astype(np.int32)


def test_exact_and_near_duplicates_across_splits():
  splits = _real_splits()
  report = audit.audit(splits, 10)["duplicates"]["validation"]
  assert report["exact"] == 0 and report["near"] <= 2  # real Fashion-MNIST: no copies
  train = splits["train"]
  copied = splits["validation"]["image"][:40]
  nudged = np.clip(splits["validation"]["image"][40:70].astype(int) + 1, 0, 255).astype(np.uint8)
  leaky = {**splits, "train": {"image": np.concatenate([train["image"], copied, nudged]),
                               "label": np.concatenate([train["label"], splits["validation"]["label"][:70]])}}
  report = audit.audit(leaky, 10)["duplicates"]["validation"]
  assert report["exact"] == 40 and 70 <= report["near"] <= 70 + 2
  assert report["exact_examples"][0] == {"train_index": 3000, "index": 0}


def test_a_lighting_shortcut_on_one_class_shows_in_the_class_drift():
  splits = _real_splits()
  clean = audit.audit(splits, 10)["class_drift"]["validation"]["worst"]
  assert abs(clean["smd"]) < 0.3  # real images, same distribution: no class stands out
  shortcut = _scenario_config(shortcut_classes=(3,), shortcut_brightness=0.6)
  relit = {**splits, "train": scenarios.apply(shortcut, splits, 10)["train"]}
  report = audit.audit(relit, 10)
  worst = report["class_drift"]["validation"]["worst"]
  assert worst["class"] == 3 and abs(worst["smd"]) > 1.0  # (the split-level KS moves far less: 0.06-0.08 on
  # full Fashion-MNIST, below its threshold; this 3,000-image sample with random classes is noisier)
  means = report["class_drift"]["validation"]["per_class_mean"]  # what a label-noise estimate mixes (data_rules)
  assert means["train"]["3"]["brightness"] < 0.7 * means["other"]["3"]["brightness"]  # the class relit by 0.6
  assert means["train"]["4"]["brightness"] == pytest.approx(means["other"]["4"]["brightness"], rel=0.15)


def test_a_colour_shortcut_on_the_coloured_variant_shows_in_a_channel_of_one_class():
  splits = _real_splits()
  coloured = scenarios.apply(_scenario_config(colorize=0.6), splits, 10)
  clean = audit.audit(coloured, 10)["class_drift"]["validation"]["worst"]
  assert abs(clean["smd"]) < data_rules.CLASS_DRIFT_SMD, clean  # random hues in every split: the rule stays quiet
  shortcut = _scenario_config(colorize=0.6, colour_shortcut_classes=(7,), colour_shortcut_hue=0.0)
  worst = audit.audit(scenarios.apply(shortcut, splits, 10), 10)["class_drift"]["validation"]["worst"]
  assert worst["class"] == 7 and worst["statistic"].startswith("chroma_") and abs(worst["smd"]) > 2.0, worst


def test_the_audit_cache_reuses_the_same_data_and_recomputes_on_one_changed_label(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  splits = {name: {"image": rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
                   "label": rng.integers(0, 10, n).astype(np.int32)} for name, n in (("train", 300), ("validation", 60))}
  first = audit.cached_audit(splits, 10, cache_dir=str(tmp_path))
  assert len(os.listdir(tmp_path)) == 1
  calls = []
  monkeypatch.setattr(audit, "audit", lambda *a, **k: calls.append(1) or {"recomputed": True})
  assert audit.cached_audit(splits, 10, cache_dir=str(tmp_path)) == json.loads(json.dumps(first)) and not calls
  changed = {**splits, "train": {**splits["train"], "label": splits["train"]["label"].copy()}}
  changed["train"]["label"][0] = (changed["train"]["label"][0] + 1) % 10
  assert audit.cached_audit(changed, 10, cache_dir=str(tmp_path)) == {"recomputed": True}
  assert audit.cached_audit(splits, 10, cache_dir="") == {"recomputed": True}  # no cache: always computed
  monkeypatch.setenv(audit.CACHE_ENV, str(tmp_path))
  assert audit.cached_audit(splits, 10) == json.loads(json.dumps(first))


def _scenario_config(**fields):
  scenario = default.get_config().data.scenario
  scenario.update(fields)
  return scenario


def test_near_duplicates_moved_a_pixel_and_noised_are_found_and_removed_by_the_fix():
  splits = _real_splits()
  rng = np.random.default_rng(1)
  leaky = {**splits, "train": scenarios.near_duplicate(splits["train"], splits["validation"], 50, rng)}
  report = audit.audit(leaky, 10)["duplicates"]["validation"]
  assert report["exact"] == 0 and 50 <= report["near"] <= 50 + 2  # no byte-identical copy, all 50 found
  index, dist = audit.nearest_same_class(leaky["train"]["image"], leaky["train"]["label"],
                                         splits["validation"]["image"], splits["validation"]["label"])
  found = set(index[dist <= audit.NEAR_RMS].tolist())
  assert set(range(3000, 3050)) <= found  # the copies themselves are what the fix removes


def test_lr_suggestion_survives_nan_and_early_spikes():
  lrs = np.logspace(-7, 1, 200)
  x = np.log10(lrs)
  loss = 2.3 - 1.4 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1.5, (x + 1.5) ** 2 * 2, 0)
  loss = loss + np.random.default_rng(0).normal(0, 0.03, len(lrs))
  loss[[3, 5, 8]] = [9.0, 0.05, 7.0]  # early spikes, both ways
  loss[170:] = np.nan  # the sweep blew up
  result = lr_range.suggest(lrs, loss)
  assert result["method"] == "steepest descent before the minimum"
  assert 3e-4 <= result["suggestion"] <= 3e-3  # the steepest descent is at 1e-3
  assert result["usable_steps"] == 170
  naive = lrs[np.argmin(np.gradient(loss[:170]))]  # a finder taking the raw steepest drop picks a spike
  assert naive < 1e-6
  assert lr_range.suggest(lrs[:5], loss[:5])["suggestion"] is None  # too short to say anything


def test_lr_suggestion_on_a_slow_broad_descent_falls_back_to_a_tenth_of_the_minimum():
  """A BatchNorm network's loss falls slowly over three decades of rate: its steepest point moves from seed to seed
  far below the minimum (1/65 and 1/93 of it on two seeds of fashion_mnist_bn.py); outside [min / 30, min / 3] it
  is not used."""
  lrs = np.logspace(-7, 1, 200)
  x = np.log10(lrs)
  loss = 2.8 - 2.0 * np.clip((x + 5) / 3, 0, 1) + np.where(x > -2, (x + 2) ** 2, 0)  # linear fall 1e-5 .. 1e-2
  loss = loss - 0.4 / (1 + np.exp(-(x + 3.8) / 0.05))  # a sharp step down at 1.6e-4: the steepest point
  result = lr_range.suggest(lrs, loss)
  assert result["lr_at_min_loss"] / 100 < result["steepest"] < result["lr_at_min_loss"] / 30  # 1/60: / 100 took it
  assert result["method"] == "min-loss rate / 10"
  assert result["suggestion"] == pytest.approx(result["lr_at_min_loss"] / 10)


def test_preflight_passes_on_learnable_data_and_catches_shuffled_labels(tiny_config):
  splits, arrays = loading.load_data(tiny_config)
  checks = {c["name"]: c for c in preflight.run_checks(tiny_config, arrays, 10, splits.image_shape)["checks"]}
  assert all(c["passed"] for c in checks.values())
  assert abs(checks["init_loss"]["value"] - np.log(10)) < 0.5
  shuffled = {**arrays, "train": {**arrays["train"],
                                  "label": np.random.default_rng(0).permutation(arrays["train"]["label"])}}
  checks = {c["name"]: c for c in preflight.run_checks(tiny_config, shuffled, 10, splits.image_shape)["checks"]}
  assert not checks["inputs_matter"]["passed"]


def test_preflight_reuses_its_compiled_steps_to_the_same_checks(tiny_config, monkeypatch):
  """A later check of the same model in one process (a population's members) reuses the compiled steps and
  writes what a fresh build writes; another model builds its own."""
  splits, arrays = loading.load_data(tiny_config)
  values = lambda config: [(c["name"], c["value"], c["passed"])
                           for c in preflight.run_checks(config, arrays, 10, splits.image_shape)["checks"]]
  monkeypatch.setattr(preflight, "_COMPILED", type(preflight._COMPILED)())
  tiny_config.seed = 1
  values(tiny_config)
  other_seed = ml_collections.ConfigDict(tiny_config.to_dict())
  other_seed.seed, other_seed.optim.learning_rate = 2, 0.5  # the checks use their own optimizer
  reused = values(other_seed)
  assert len(preflight._COMPILED) == 1
  monkeypatch.setattr(preflight, "_COMPILED", type(preflight._COMPILED)())
  assert values(other_seed) == reused
  wide = ml_collections.ConfigDict(tiny_config.to_dict())
  wide.model.width_multiplier = 2.0
  values(wide)
  assert len(preflight._COMPILED) == 2


def test_a_failed_in_run_lr_range_test_is_logged_and_leaves_no_file(tiny_config, tmp_path, monkeypatch, caplog):
  def out_of_memory(*args, **kwargs):
    raise MemoryError("no room for the sweep")
  monkeypatch.setattr(lr_range, "sweep", out_of_memory)
  assert lr_range.sweep_into(str(tmp_path), tiny_config, {}, 10, (28, 28, 1)) is None
  assert not os.path.exists(os.path.join(tmp_path, rundir.LR_FIND_FILE))
  assert "The LR range test failed (MemoryError: no room for the sweep); training goes on" in caplog.text
  assert not lr_range.measured_for(str(tmp_path), tiny_config)


def test_a_run_ends_with_the_doctor_and_the_cli_rediagnoses_it(tiny_config, tmp_path):
  tiny_config.preflight = True
  tiny_config.doctor = True
  tiny_config.num_epochs = 3
  tiny_config.data.scenario.duplicates = 60  # a fault the doctor must name
  workdir = str(tmp_path / "run")
  # A test of another recipe written into the directory before training (`lr_find --config=OTHER`) is replaced.
  rundir.write_json(workdir, rundir.LR_FIND_FILE, {"suggestion": 3.0, "config": {"model.name": "ResNet"}})
  train.train_and_evaluate(tiny_config, workdir)
  for name in ("audit.json", "preflight.json", "lr_find.json", "diagnosis.json", "report.md",
               "plots/learning_curves.png", "plots/confusion.png", "plots/image_stats.png",
               "plots/per_class_recall.png", "plots/lr_find.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  found = rundir.read_json(workdir, rundir.LR_FIND_FILE)  # the run's own LR range test, before its first epoch
  assert len(found["lrs"]) == len(found["losses"]) and found["configured_lr"] == tiny_config.optim.learning_rate
  assert found["config"] == config_fields.swept_config(rundir.config_to_dict(tiny_config))
  assert "model.name" in found["config"] and "optim.learning_rate" not in found["config"]
  assert "LR range test" in rundir.read_json(workdir, rundir.TIMING_FILE)["phases"]
  diagnosis = rundir.read_json(workdir, doctor.DIAGNOSIS_FILE)
  assert diagnosis["findings"][0]["cause"] == "data_leakage"
  report = open(os.path.join(workdir, "report.md")).read()
  assert "data_leakage" in report and "![Learning curves](plots/learning_curves.png)" in report
  assert f"x this run's rate {tiny_config.optim.learning_rate:g} (`lr_too_low` reads 100x or more with adam" in report
  os.remove(os.path.join(workdir, doctor.DIAGNOSIS_FILE))
  out = subprocess.run([sys.executable, "-m", "cnn_val.doctor", f"--workdir={workdir}"], cwd=REPO,
                       capture_output=True, text=True, check=True).stdout
  assert out.startswith("problems_found: data_leakage (high")
  assert json.load(open(os.path.join(workdir, "diagnosis.json")))["findings"][0]["cause"] == "data_leakage"


def test_a_class_missing_from_training_trains_with_a_warning_and_is_the_top_finding(tiny_config, tmp_path, caplog):
  tiny_config.doctor = True
  tiny_config.data.scenario.missing_classes = (1,)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(tiny_config, workdir)
  assert "No training images for class(es) 1 (Trouser) (validation holds 10 of them)" in caplog.text
  top = rundir.read_json(workdir, doctor.DIAGNOSIS_FILE)["findings"][0]
  assert top["cause"] == "missing_class" and top["severity"] == "high" and top["evidence"]["missing_classes"] == [1]


def test_doctor_on_a_directory_that_is_not_a_run(tmp_path):
  result = subprocess.run([sys.executable, "-m", "cnn_val.doctor", f"--workdir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode != 0 and "has no config.json: it is not a cnn_val run directory" in result.stderr


def test_doctor_on_a_run_that_was_never_evaluated_says_so_and_writes_nothing(tmp_path):
  """A run killed during pre-flight holds config.json and nothing else: not 'healthy'."""
  rundir.write_or_check_config(str(tmp_path), default.get_config())
  before = sorted(os.listdir(tmp_path))
  result = subprocess.run([sys.executable, "-m", "cnn_val.doctor", f"--workdir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode == 2 and "has not been evaluated yet" in result.stderr
  assert "Traceback" not in result.stderr and sorted(os.listdir(tmp_path)) == before


def test_preflight_init_loss_expects_the_prior_with_prior_bias_init(tiny_config):
  tiny_config.data.scenario.imbalance_ratio = 20.0
  tiny_config.model.prior_bias_init = True
  splits, arrays = loading.load_data(tiny_config)
  init = next(c for c in preflight.run_checks(tiny_config, arrays, 10, splits.image_shape)["checks"]
              if c["name"] == "init_loss")
  assert init["passed"] and init["expected"] > np.log(10) + 0.3  # balanced validation under a skewed prior
  assert abs(init["value"] - init["expected"]) < 0.3

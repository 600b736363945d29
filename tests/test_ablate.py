"""The ablation engine: arm parsing, statistics against scipy, aggregation from run directories, and a sweep
that survives SIGKILLs of a worker and of itself with the same table as an uninterrupted sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from cnn_val import ablate, rundir, train
from cnn_val.ablate import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_arms_from_flags_grids_and_sweep_files(tmp_path):
  assert ablate.parse_arm("base:") == ablate.Arm("base", {})
  arm = ablate.parse_arm("wide:model.widths=(64,128),config.optim.learning_rate=3e-3,augment.preset=characters")
  assert arm.overrides == {"model.widths": (64, 128), "optim.learning_rate": 3e-3, "augment.preset": "characters"}
  with pytest.raises(ablate.SweepError, match="expected NAME:FIELD=VALUE"):
    ablate.parse_arm("wide")
  arms = ablate.grid_arms(["model.dropout_rate=0.3;0.5", "optim.schedule=cosine;constant"])
  assert [a.name for a in arms] == ["dropout_rate=0.3+schedule=cosine", "dropout_rate=0.3+schedule=constant",
                                    "dropout_rate=0.5+schedule=cosine", "dropout_rate=0.5+schedule=constant"]
  assert ablate.grid_arms([]) == []
  sweep_file = tmp_path / "sweep.py"
  sweep_file.write_text("def get_sweep():\n  return [{'name': 'base'}, {'optim.learning_rate': 1e-2}]\n")
  assert ablate.sweep_file_arms(str(sweep_file)) == [ablate.Arm("base", {}),
                                                     ablate.Arm("learning_rate=0.01", {"optim.learning_rate": 1e-2})]
  for text, message in (("def get_sweep(:\n", "could not be read: SyntaxError"),
                        ("x = 1\n", "defines no get_sweep"),
                        ("def get_sweep():\n  return [1]\n", r"get_sweep\(\)\[0\] is a int")):
    sweep_file.write_text(text)
    with pytest.raises(ablate.SweepError, match=message):
      ablate.sweep_file_arms(str(sweep_file))
  with pytest.raises(ablate.SweepError, match="missing.py could not be read: FileNotFoundError"):
    ablate.sweep_file_arms(str(tmp_path / "missing.py"))


def test_unknown_fields_and_bad_sweeps_are_named():
  from cnn_val.configs import default
  base = rundir.config_to_dict(default.get_config())
  with pytest.raises(ablate.SweepError, match="no field 'dropout_rat' in config.model; did you mean 'dropout_rate'"):
    ablate.Sweep(base, [ablate.Arm("a", {"model.dropout_rat": 0.1})], [0])
  with pytest.raises(ablate.SweepError, match="unique"):
    ablate.Sweep(base, [ablate.Arm("a"), ablate.Arm("a")], [0])
  with pytest.raises(ablate.SweepError, match="baseline arm 'b'"):
    ablate.Sweep(base, [ablate.Arm("a")], [0], baseline="b")
  sweep = ablate.Sweep(base, [ablate.Arm("x", {"model.dropout_rate": 0.2}), ablate.Arm("base")], [0, 1])
  assert sweep.baseline == "base"  # the arm without overrides
  with pytest.raises(ablate.SweepError, match=r"Arm 'x': config.optim.learning_rate='abc' is a str, but the field "
                                               r"holds a float"):
    ablate.Sweep(base, [ablate.Arm("x", ablate.parse_overrides("optim.learning_rate=abc"))], [0])
  with pytest.raises(ablate.SweepError, match=r"Arm 'x': config.model.dropout_rate=1.5: expected a rate in \[0, 1\)"):
    ablate.Sweep(base, [ablate.Arm("x", {"model.dropout_rate": 1.5})], [0])
  assert ablate.Sweep(base, [ablate.Arm("x", {"optim.learning_rate": 1, "model.widths": (8, 16)})], [0])  # int->float
  config = ablate.config_from_dict(ablate.run_config(base, {"model.widths": (8, 16)}, 5))
  assert config.seed == 5 and config.model.widths == (8, 16)
  with pytest.raises(AttributeError):
    config.model.not_a_field = 1  # locked, like the configs


def test_statistics_match_scipy():
  rng = np.random.default_rng(0)
  for n in (2, 3, 5, 8):
    base = rng.normal(0.9, 0.01, n)
    treated = base + rng.normal(0.01, 0.005, n)
    summary = ablate.mean_ci(treated)
    assert summary["std"] == pytest.approx(np.std(treated, ddof=1))
    assert summary["ci95"] == pytest.approx(list(stats.t.interval(0.95, n - 1, np.mean(treated), stats.sem(treated))))
    diff = ablate.paired_difference(treated, base)
    reference = stats.ttest_rel(treated, base)
    assert diff["p_value"] == pytest.approx(reference.pvalue)
    assert diff["ci95"] == pytest.approx(list(reference.confidence_interval(0.95)))
    assert diff["mean"] == pytest.approx(np.mean(treated - base))
  assert ablate.mean_ci([0.5]) == {"n": 1, "mean": 0.5, "std": None, "ci95": None}
  assert ablate.paired_difference([0.6, 0.7], [0.5, 0.6])["ci95"] == pytest.approx([0.1, 0.1])  # no spread


def _fake_run(workdir, accuracies, *, epochs=None, test=None, diverged=False, seconds=10.0):
  os.makedirs(workdir)
  epochs = epochs or len(accuracies)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"num_epochs": epochs}, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for i, acc in enumerate(accuracies):
      row = {"step": 10 * (i + 1), "epoch": i + 1, "val_accuracy": acc}
      if i + 1 == epochs and test is not None:
        row["test_accuracy"] = test
      f.write(json.dumps(row) + "\n")
  if diverged:
    with open(os.path.join(workdir, "diverged.json"), "w") as f:
      json.dump({"step": 5, "lr": None, "last_good_step": None}, f)
    with open(os.path.join(workdir, "preflight.json"), "w") as f:
      json.dump({"checks": [{"name": "majority_class", "value": 0.1, "passed": True}]}, f)
  with open(os.path.join(workdir, ablate.RUN_RESULT_FILE), "w") as f:
    json.dump({"seconds": seconds}, f)


def test_aggregation_reads_run_directories(tmp_path):
  out = str(tmp_path)
  sweep = ablate.Sweep({"seed": 0, "num_epochs": 3}, [ablate.Arm("base"), ablate.Arm("fix", {"num_epochs": 3})],
                       [0, 1, 2], check=False)  # a fake base: fields only, no config_check
  ablate.prepare(sweep, out)
  base = [[0.80, 0.84, 0.85], [0.81, 0.83, 0.86], [0.79, 0.84, 0.84]]
  fix = [[0.85, 0.88, 0.90], [0.84, 0.89, 0.92], [0.86, 0.87, 0.91]]
  for s in range(3):
    _fake_run(ablate.run_dir(out, "base", s), base[s], test=base[s][-1] - 0.01)
    _fake_run(ablate.run_dir(out, "fix", s), fix[s], test=fix[s][-1] - 0.02, seconds=20.0)
  table = ablate.write_results(out)
  arms = {a["arm"]: a for a in table["arms"]}
  finals = ([b[-1] for b in base], [f[-1] for f in fix])
  assert arms["fix"]["final_val_accuracy"]["mean"] == pytest.approx(np.mean(finals[1]))
  assert arms["fix"]["best_val_accuracy"]["mean"] == pytest.approx(np.mean(finals[1]))
  assert arms["base"]["val_minus_test_accuracy"]["mean"] == pytest.approx(0.01)
  delta = arms["fix"]["final_val_accuracy_vs_baseline"]
  assert delta["p_value"] == pytest.approx(stats.ttest_rel(finals[1], finals[0]).pvalue)
  assert arms["fix"]["seconds"]["mean"] == 20.0
  assert arms["base"]["curve"][0] == (1, pytest.approx(0.80), pytest.approx(0.01), 3)
  md = open(os.path.join(out, ablate.RESULTS_MD)).read()
  assert "| fix | num_epochs=3 | 3 | 91.00 ± 1.00 |" in md
  rows = open(os.path.join(out, ablate.RESULTS_CSV)).read().splitlines()
  assert len(rows) == 3 and rows[0].startswith("arm,baseline,overrides")
  assert os.path.exists(os.path.join(out, "plots", "arms.png")) and os.path.exists(os.path.join(out, "plots", "curves.png"))
  # A run still going is not counted; a diverged run counts, at the majority-class accuracy when it never
  # reached an evaluation.
  import shutil
  shutil.rmtree(ablate.run_dir(out, "fix", 2))
  _fake_run(ablate.run_dir(out, "fix", 2), [0.5], epochs=3)
  shutil.rmtree(ablate.run_dir(out, "base", 2))
  _fake_run(ablate.run_dir(out, "base", 2), [], epochs=3, diverged=True)
  table = ablate.aggregate(out)
  arms = {a["arm"]: a for a in table["arms"]}
  assert table["incomplete"] == ["fix/seed2"]
  assert arms["base"]["final_val_accuracy_values"][2] == 0.1 and arms["base"]["diverged"] == 1
  assert arms["fix"]["final_val_accuracy_vs_baseline"]["n"] == 2  # paired on the seeds both finished


def _sweep_command(out, data_dir, *extra):
  return [sys.executable, "launch/ablate.py", "--config=configs/default.py", f"--out={out}", "--seeds=3",
          "--arm=base:", "--arm=drop:model.dropout_rate=0.2", "--arm=lr:optim.learning_rate=3e-3",
          f"--config.data.data_dir={data_dir}", "--config.data.download=False", "--config.num_epochs=3",
          "--config.num_devices=1", "--config.preflight=False", "--config.doctor=False",
          "--config.data.max_train_examples=320", "--config.eval_batch_size=64", "--config.optim.decay_steps=30",
          "--parallel=2", *extra]


def _children(pid):
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    return [int(p) for p in f.read().split()]


def _table_without_time(out):
  table = ablate.aggregate(out)
  for arm in table["arms"]:
    del arm["seconds"]
  return table


@pytest.mark.slow
def test_a_sweep_survives_sigkills_and_aggregates_like_an_uninterrupted_one(tiny_data_dir, tmp_path):
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
  clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
  subprocess.run(_sweep_command(clean, tiny_data_dir), cwd=REPO, env=env, check=True, capture_output=True)

  sweep = subprocess.Popen(_sweep_command(killed, tiny_data_dir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
  checkpoint = os.path.join(ablate.run_dir(killed, "base", 0), "checkpoints", "latest")
  deadline = time.time() + 300  # against a hang only: another test may share the 2 cores (pytest -n 2)
  while not (os.path.isdir(checkpoint) and any(d.isdigit() for d in os.listdir(checkpoint))):
    assert time.time() < deadline and sweep.poll() is None, "the first run never wrote a checkpoint"
    time.sleep(0.2)
  os.kill(_children(sweep.pid)[0], signal.SIGKILL)  # a worker, mid-run: the sweep resumes it
  deadline = time.time() + 300
  while sum(ablate.run_status(ablate.run_dir(killed, a, s)) == "finished"
            for a in ("base", "drop", "lr") for s in range(3)) < 2:
    assert time.time() < deadline and sweep.poll() is None
    time.sleep(0.2)
  workers = _children(sweep.pid)
  sweep.kill()  # the sweep itself; its workers die with it
  log = sweep.communicate()[0].decode()
  assert "was killed (signal 9); resuming it from its checkpoint" in log
  time.sleep(1)
  assert not any(os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z" for w in workers)

  result = subprocess.run(_sweep_command(killed, tiny_data_dir), cwd=REPO, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "already finished" in result.stdout
  assert _table_without_time(killed) == _table_without_time(clean)
  for arm in ("base", "drop", "lr"):
    for seed in range(3):
      with open(os.path.join(ablate.run_dir(clean, arm, seed), "metrics.jsonl")) as a, \
          open(os.path.join(ablate.run_dir(killed, arm, seed), "metrics.jsonl")) as b:
        assert a.read() == b.read(), (arm, seed)
  # The same command on a finished sweep trains nothing and rewrites the same table.
  again = subprocess.run(_sweep_command(killed, tiny_data_dir), cwd=REPO, env=env, capture_output=True, text=True)
  assert "0 to train" in again.stdout and "| lr | optim.learning_rate=0.003 | 3 |" in again.stdout


def test_a_worker_trains_what_train_and_evaluate_trains(tiny_config, tmp_path):
  direct = str(tmp_path / "direct")
  train.train_and_evaluate(tiny_config, direct)
  sweep = ablate.Sweep(rundir.config_to_dict(tiny_config), [ablate.Arm("base")], [tiny_config.seed])
  out = str(tmp_path / "sweep")
  table = ablate.run_sweep(sweep, out, log=lambda _: None)
  assert table["arms"][0]["finished"] == 1
  assert rundir.read_metrics(direct) == rundir.read_metrics(ablate.run_dir(out, "base", tiny_config.seed))
  # The sweep's runs share their audit through a cache keyed by the data: the same audit as a run alone.
  assert len(os.listdir(os.path.join(out, ablate.CACHE_DIR + "_audit"))) == 1
  read = lambda d: {k: v for k, v in rundir.read_json(d, rundir.AUDIT_FILE).items() if k != "seconds"}
  assert read(ablate.run_dir(out, "base", tiny_config.seed)) == read(direct)


def test_budget_and_max_runs_refuse_with_the_estimate(tiny_config, tmp_path):
  base = rundir.config_to_dict(tiny_config)
  sweep = ablate.Sweep(base, [ablate.Arm("base"), ablate.Arm("b", {"model.dropout_rate": 0.1})], [0, 1])
  with pytest.raises(ablate.SweepError, match=r"4 runs to train, more than --max_runs=3"):
    ablate.run_sweep(sweep, str(tmp_path / "a"), max_runs=3, log=lambda _: None)
  messages = []
  with pytest.raises(ablate.SweepError, match=r"Over budget: 3 more runs need about .* min against --budget_minutes=0.01"):
    ablate.run_sweep(sweep, str(tmp_path / "b"), budget_minutes=0.01, log=messages.append)
  assert any(m.startswith("Estimate: 3 runs left at") for m in messages)
  assert not os.path.exists(tmp_path / "a" / ablate.SWEEP_FILE)  # refused before anything was written
  # The sweep is what a call names: fewer seeds on the same directory shrink it (the finished run is kept).
  smaller = ablate.Sweep(base, [ablate.Arm("base")], [0])
  assert ablate.run_sweep(smaller, str(tmp_path / "b"), log=lambda _: None)["arms"][0]["finished"] == 1
  assert ablate.aggregate(str(tmp_path / "b"))["seeds"] == [0]
  assert ablate.run_status(ablate.run_dir(str(tmp_path / "b"), "base", 0)) == "finished"  # kept for later
  # A second sweep process on the same directory is refused while the first holds it.
  with ablate.sweep_lock(str(tmp_path / "b")):
    with pytest.raises(ablate.SweepError, match="is being run by pid"):
      ablate.run_sweep(sweep, str(tmp_path / "b"), log=lambda _: None)


def test_a_run_stopped_early_is_finished_and_counted(tmp_path):
  """early_stopping_patience ends a run before num_epochs: an outcome, counted at its last evaluation, not a failed
  run to train again (before this, a sweep retried it and left it out of the table)."""
  out = str(tmp_path)
  sweep = ablate.Sweep({"seed": 0, "num_epochs": 5}, [ablate.Arm("base")], [0, 1], check=False)
  ablate.prepare(sweep, out)
  _fake_run(ablate.run_dir(out, "base", 0), [0.80, 0.84, 0.83], epochs=5)
  _fake_run(ablate.run_dir(out, "base", 1), [0.81, 0.85, 0.86, 0.86, 0.87], test=0.85)
  assert ablate.run_status(ablate.run_dir(out, "base", 0)) == "partial"  # killed at epoch 3 of 5
  with open(os.path.join(ablate.run_dir(out, "base", 0), rundir.EARLY_STOP_FILE), "w") as f:
    json.dump({"epoch": 3, "step": 30, "patience": 1, "best_epoch": 2}, f)
  assert ablate.run_status(ablate.run_dir(out, "base", 0)) == "finished"
  arm = ablate.aggregate(out)["arms"][0]
  assert arm["finished"] == 2 and arm["final_val_accuracy"]["mean"] == pytest.approx((0.83 + 0.87) / 2)
  # Its curve: both seeds to epoch 3, then seed 1 alone (a plot draws that part dashed, not as the same mean).
  assert [c[3] for c in arm["curve"]] == [2, 2, 2, 1, 1] and results.curve_cut(arm["curve"]) == 3
  assert ablate.write_results(out) and os.path.exists(os.path.join(out, "plots", "curves.png"))
  with open(os.path.join(ablate.run_dir(out, "base", 0), rundir.EARLY_STOP_FILE), "w") as f:
    json.dump({"epoch": 4, "step": 40, "patience": 1, "best_epoch": 3}, f)  # its last row is not the stop's
  assert ablate.run_status(ablate.run_dir(out, "base", 0)) == "partial"


def test_a_budget_estimate_reads_time_an_epoch_and_the_epochs_runs_are_expected_to_train(tmp_path):
  """A run early stopping ended at epoch 2 of 8 took a quarter of what a run of all 8 epochs takes: the estimate is
  its time an epoch times the epochs each run still to train is expected to train (before, its 10 s stood for a
  40 s run and let a sweep over budget through). Runs that early stopping may end too are expected to stop where
  the finished ones did, at the same share of their budget (before the fix they were estimated at all of it)."""
  out = str(tmp_path)
  base = {"seed": 0, "num_epochs": 8}
  ablate.prepare(ablate.Sweep(base, [ablate.Arm("base")], [0], check=False), out)
  stopped = ablate.run_dir(out, "base", 0)
  _fake_run(stopped, [0.80, 0.79], epochs=8, seconds=10.0)
  with open(os.path.join(stopped, "config.json"), "w") as f:
    json.dump({"num_epochs": 8, "early_stopping_patience": 1}, f)
  with open(os.path.join(stopped, rundir.EARLY_STOP_FILE), "w") as f:
    json.dump({"epoch": 2, "step": 20, "patience": 1, "best_epoch": 1}, f)
  assert ablate.epochs_trained(stopped) == 2 and ablate.seconds_per_epoch(stopped) == pytest.approx(5.0)
  assert ablate.expected_epochs({"num_epochs": 8}, [stopped]) == 8.0  # no early stopping: the whole budget
  assert ablate.expected_epochs({"num_epochs": 20, "early_stopping_patience": 3}, [stopped]) == pytest.approx(5.0)
  assert ablate.expected_epochs({"num_epochs": 20, "early_stopping_patience": 3}, []) == 20.0  # nothing to go by
  # A population's members share the time of its longest: ablate.json says how many epochs that paid for.
  member = ablate.run_dir(out, "pop", 0)
  _fake_run(member, [0.8] * 3, epochs=8, seconds=12.0)
  with open(os.path.join(member, ablate.RUN_RESULT_FILE), "w") as f:
    json.dump({"seconds": 12.0, "epochs": 6}, f)
  assert ablate.seconds_per_epoch(member) == pytest.approx(2.0)
  # A run that diverged before its first evaluation says nothing of what a whole run costs.
  _fake_run(ablate.run_dir(out, "nan", 0), [], epochs=8, diverged=True)
  assert ablate.seconds_per_epoch(ablate.run_dir(out, "nan", 0)) is None
  sweep = ablate.Sweep(base, [ablate.Arm("base"), ablate.Arm("b", {"num_epochs": 8})], [0, 1], check=False)
  messages = []
  with pytest.raises(ablate.SweepIncomplete, match=r"Over budget: 3 more runs need about 2.0 min"):
    ablate.run_sweep(sweep, out, budget_minutes=1.5, log=messages.append)
  assert any(m.startswith("Estimate: 3 runs left at 40 s each (finished runs' mean)") for m in messages)


def test_a_torn_metrics_line_is_dropped_and_a_corrupt_one_is_named(tmp_path):
  _fake_run(str(tmp_path / "run"), [0.5, 0.6, 0.7])
  path = tmp_path / "run" / "metrics.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines[:2]) + lines[2][:15])  # killed mid-write of the last evaluation
  assert [r["epoch"] for r in rundir.read_metrics(str(tmp_path / "run"))] == [1, 2]
  assert ablate.run_status(str(tmp_path / "run")) == "partial"  # its last epoch is trained again
  path.write_text(lines[0][:15] + "\n" + "".join(lines[1:]))
  with pytest.raises(ValueError, match=r"metrics.jsonl, line 1, is not valid JSON"):
    rundir.read_metrics(str(tmp_path / "run"))
  (tmp_path / "run" / "config.json").write_text('{"num_ep')
  with pytest.raises(ValueError, match=r"config.json is not valid JSON .* Remove it"):
    rundir.read_json(str(tmp_path / "run"), "config.json")


def test_a_sweep_from_before_a_config_field_existed_resumes_and_a_changed_base_is_refused(tmp_path):
  from cnn_val.configs import default  # pylint: disable=import-outside-toplevel
  base = rundir.config_to_dict(default.get_config())
  old = json.loads(json.dumps(base))
  del old["model"]["kernel_init"], old["train_eval_examples"]  # written by an older version
  out = str(tmp_path)
  ablate.prepare(ablate.Sweep(old, [ablate.Arm("base")], [0], check=False), out)
  ablate.prepare(ablate.Sweep(base, [ablate.Arm("base")], [0], check=False), out)  # no error
  base["optim"]["learning_rate"] = 0.01
  with pytest.raises(ablate.SweepError, match=r"different base config \(fields optim.learning_rate\)"):
    ablate.prepare(ablate.Sweep(base, [ablate.Arm("base")], [0], check=False), out)
  # An old run's config takes arms on fields added since, at their neutral value otherwise (doctor --verify
  # of a run trained before the learning curve or the relabel option existed).
  del old["data"]["train_fraction"], old["data"]["relabel_train_examples"]
  arm = ablate.Arm("half", {"data.train_fraction": 0.5, "data.relabel_train_examples": "x.json"})
  ablate.check_arm(old, arm, 0)
  config = ablate.run_config(old, arm.overrides, 0)
  assert config["data"]["train_fraction"] == 0.5 and config["data"]["relabel_train_examples"] == "x.json"
  assert ablate.run_config(old, {}, 0)["data"]["train_fraction"] == 1.0 and "train_fraction" not in old["data"]


@pytest.mark.slow
def test_the_submitit_path_trains_and_aggregates_a_2x2_sweep(tiny_config, tmp_path):
  """--executor=submitit_local: the cluster submission path (one task per run directory) on this machine; each
  task trains what train_and_evaluate trains, and the sweep aggregates as any sweep does."""
  tiny_config.data.max_train_examples = 320
  tiny_config.eval_batch_size = 64
  tiny_config.num_epochs = 1
  sweep = ablate.Sweep(rundir.config_to_dict(tiny_config),
                       [ablate.Arm("base"), ablate.Arm("drop", {"model.dropout_rate": 0.2})], [0, 1])
  out, logs = str(tmp_path / "sweep"), []
  table = ablate.run_sweep(sweep, out, parallel=2, executor="submitit_local", log=logs.append)
  assert any("Submitted 4 runs as submitit_local job(s)" in line for line in logs)
  assert os.listdir(os.path.join(out, "submitit"))  # submitit's own files, one folder per task
  assert [(a["arm"], a["finished"]) for a in table["arms"]] == [("base", 2), ("drop", 2)]
  assert _table_without_time(out)["arms"][1]["final_val_accuracy_vs_baseline"]["n"] == 2
  for arm, seed in (("base", 0), ("drop", 1)):
    config = ablate.config_from_dict(rundir.read_json(ablate.run_dir(out, arm, seed), ablate.RUN_SPEC_FILE)["config"])
    direct = str(tmp_path / f"direct_{arm}{seed}")
    train.train_and_evaluate(config, direct)
    assert rundir.read_metrics(ablate.run_dir(out, arm, seed)) == rundir.read_metrics(direct)
  for arm in ("base", "drop"):
    for seed in (0, 1):
      record = rundir.read_json(ablate.run_dir(out, arm, seed), ablate.RUN_RESULT_FILE)
      assert record["status"] == "finished" and record["returncode"] == 0 and record["seconds"] > 0
  # The same call again submits nothing.
  again = []
  ablate.run_sweep(sweep, out, parallel=2, executor="submitit_local", log=again.append)
  assert "0 to train" in again[0] and not any("Submitted" in line for line in again)


def test_an_unknown_executor_is_refused(tiny_config, tmp_path):
  sweep = ablate.Sweep(rundir.config_to_dict(tiny_config), [ablate.Arm("base")], [0])
  with pytest.raises(ablate.SweepError, match="--executor='pbs': expected one of local, slurm, submitit_local"):
    ablate.run_sweep(sweep, str(tmp_path), executor="pbs")


def test_workers_split_the_visible_gpus_and_share_them_when_there_are_fewer(monkeypatch):
  from cnn_val.ablate import runner  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
  assert runner._gpu_groups(2) == ["0,2", "1,3"] and runner._gpu_groups(4) == ["0", "1", "2", "3"]
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
  groups = runner._gpu_groups(4)
  assert groups == ["0", "1", "0", "1"]
  env = {}
  runner._gpu_env(env, groups[0], groups)  # GPU 0 is shared: memory as needed, not 75% up front each
  assert env == {"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.2"}  # the user's choice stands
  runner._gpu_env(env, groups[0], groups)
  assert env == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.2", "CUDA_VISIBLE_DEVICES": "0"}
  env = {}
  runner._gpu_env(env, "0,2", ["0,2", "1,3"])  # a GPU of its own: JAX's default allocation
  assert env == {"CUDA_VISIBLE_DEVICES": "0,2"}

"""Population training (cnn_val/population.py): P runs at once, each member's run directory what a run alone
writes; the ablation engine's populations (--population)."""

import copy
import json
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_val import ablate, augment, config_fields, population, rundir, train, train_loop
from cnn_val.ablate import runner


def _member(config, seed: int, learning_rate: float):
  config = copy.deepcopy(config)
  config.seed, config.optim.learning_rate = seed, learning_rate
  return config


def _assert_same_run(got: list[dict], expected: list[dict], tolerance: float = 1e-5):
  """Every field of every row: counts, confusions and histograms exactly, floats to round-off (the member's
  rate and weight decay are traced numbers in the population, constants alone; the batched convolutions sum
  in another order)."""
  assert [r["epoch"] for r in got] == [r["epoch"] for r in expected] and got
  for g, e in zip(got, expected):
    assert set(g) == set(e)
    for key, value in e.items():
      if isinstance(value, float):
        assert math.isclose(g[key], value, rel_tol=tolerance, abs_tol=tolerance), (key, g[key], value)
      elif isinstance(value, list) and value and isinstance(value[0], float):
        assert all(math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance) for a, b in zip(g[key], value)), key
      else:
        assert g[key] == value, key


def test_members_of_another_seed_rate_dropout_and_weighting_write_what_runs_alone_write(tiny_config, tmp_path):
  tiny_config.train_eval_examples = 256  # the training probe too
  configs = [_member(tiny_config, 0, 1e-3), _member(tiny_config, 1, 2e-3)]
  configs[1].model.dropout_rate = 0.3  # SeedCNNDropout's 0.5 in the other
  configs[1].imbalance.class_weighting = "inverse"  # the other weighs its classes alike (by 1)
  transition = np.eye(10) * 0.9 + np.roll(np.eye(10), 1, axis=1) * 0.1  # both: the loss forward-corrected
  (tmp_path / "noise_transition.json").write_text(json.dumps({"transition": transition.tolist()}))
  for config in configs:
    config.data.noise_transition = str(tmp_path / "noise_transition.json")
  dirs = [str(tmp_path / f"member{i}") for i in range(2)]
  rows = population.train_population(configs, dirs)
  for i, config in enumerate(configs):
    alone = str(tmp_path / f"alone{i}")
    train.train_and_evaluate(config, alone)
    _assert_same_run(rundir.read_metrics(dirs[i]), rundir.read_metrics(alone))
    assert rows[i] == rundir.read_metrics(dirs[i])[-1]
    assert rundir.read_json(dirs[i], rundir.CONFIG_FILE) == rundir.read_json(alone, rundir.CONFIG_FILE)
    for name in (rundir.AUDIT_FILE, rundir.TRAIN_PREDICTIONS_FILE, rundir.TIMING_FILE):
      assert os.path.exists(os.path.join(dirs[i], name)), name
    # The label check's file: the same weights (best or final, at the same step) and outputs as the run alone's.
    with np.load(os.path.join(dirs[i], rundir.TRAIN_PREDICTIONS_FILE)) as got, \
         np.load(os.path.join(alone, rundir.TRAIN_PREDICTIONS_FILE)) as expected:
      assert str(got["checkpoint"]) == str(expected["checkpoint"]) and int(got["step"]) == int(expected["step"])
      np.testing.assert_allclose(got["probs"].astype(np.float32), expected["probs"].astype(np.float32), atol=2e-3)
  # The two members learned differently (another seed, twice the rate): not one model written twice.
  assert rundir.read_metrics(dirs[0])[-1]["train_loss"] != rundir.read_metrics(dirs[1])[-1]["train_loss"]
  # A member's checkpoint is an ordinary run's: run alone again, it is finished and changes nothing.
  before = rundir.read_metrics(dirs[1])
  assert train.train_and_evaluate(configs[1], dirs[1]) == before[-1]
  assert rundir.read_metrics(dirs[1]) == before


@pytest.mark.slow
def test_a_member_ahead_joins_at_its_epoch_and_a_diverging_member_leaves(tiny_config, tmp_path, monkeypatch):
  tiny_config.optim.optimizer, tiny_config.optim.momentum = "sgd", 0.0
  tiny_config.optim.schedule = "constant"
  steady, ahead, blowing_up = (_member(tiny_config, 0, 0.05), _member(tiny_config, 1, 0.05),
                               _member(tiny_config, 2, 1e12))
  dirs = {name: str(tmp_path / name) for name in ("steady", "ahead", "blowing_up")}

  # "ahead": interrupted (SIGTERM, as a sweep stops its workers) in its second epoch, checkpoint at epoch 1.
  tiny_config.steps_per_call = 0
  steps_per_epoch = 1080 // tiny_config.batch_size
  real_call = train_loop.Progress.__call__

  sent = []

  def stop_in_epoch_two(self, step, epoch, sums, executed=None):
    real_call(self, step, epoch, sums, executed)
    # Fused chunks report epoch 1's progress after its one call, and the loop sees the signal after the next
    # call, which trains epoch 2: the stop lands there. Once: a second SIGTERM stops at once.
    if step >= steps_per_epoch // 2 and not sent:
      sent.append(step)
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(train_loop.Progress, "__call__", stop_in_epoch_two)
  with pytest.raises(train.TrainingInterrupted):
    train.train_and_evaluate(ahead, dirs["ahead"])
  monkeypatch.setattr(train_loop.Progress, "__call__", real_call)
  assert [r["epoch"] for r in rundir.read_metrics(dirs["ahead"])] == [1]

  rows = population.train_population([steady, ahead, blowing_up],
                                     [dirs["steady"], dirs["ahead"], dirs["blowing_up"]])
  assert rows[2] == {}
  diverged = rundir.read_json(dirs["blowing_up"], rundir.DIVERGED_FILE)
  assert diverged is not None and diverged["step"] <= steps_per_epoch
  assert rundir.read_metrics(dirs["blowing_up"]) == []
  for name, config in (("steady", steady), ("ahead", ahead)):
    alone = str(tmp_path / f"alone_{name}")
    train.train_and_evaluate(config, alone)
    _assert_same_run(rundir.read_metrics(dirs[name]), rundir.read_metrics(alone))


def test_configs_that_differ_beyond_seed_rate_and_decay_are_refused_with_the_fields(tiny_config, tmp_path):
  wide = copy.deepcopy(tiny_config)
  wide.model.width_multiplier = 2.0
  dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
  with pytest.raises(population.PopulationUnfit, match=r"also differ in model\.width_multiplier.*--population=never"):
    population.train_population([tiny_config, wide], dirs)
  decayed = _member(tiny_config, 1, 1e-3)
  decayed.optim.weight_decay = 1e-4
  with pytest.raises(population.PopulationUnfit, match=r"all set optim\.weight_decay or none"):
    population.train_population([tiny_config, decayed], dirs)
  undropped = _member(tiny_config, 1, 1e-3)
  undropped.model.dropout_rate = 0.0
  with pytest.raises(population.PopulationUnfit, match=r"all set model\.dropout_rate or none"):
    population.train_population([tiny_config, undropped], dirs)
  with pytest.raises(ValueError, match="run directories of their own"):
    population.train_population([tiny_config, _member(tiny_config, 1, 1e-3)], [dirs[0], dirs[0]])
  assert not os.path.exists(dirs[0]) and not os.path.exists(dirs[1])  # refused before anything was written
  assert population.population_differences([tiny_config, _member(tiny_config, 3, 5e-4)]) == []


def _jobs_and_configs(tiny_config, arms: dict, seeds=(0, 1)):
  jobs, configs = [], {}
  base = rundir.config_to_dict(tiny_config)
  for arm, overrides in arms.items():
    for seed in seeds:
      job = runner._Job(arm, seed, f"/sweep/runs/{arm}/seed{seed}")  # pylint: disable=protected-access
      jobs.append(job)
      configs[job.workdir] = ablate.run_config(base, overrides, seed)
  return jobs, configs


def test_the_engine_groups_the_runs_a_population_can_train(tiny_config):
  arms = {"base": {}, "fast": {"optim.learning_rate": 3e-3}, "wide": {"model.width_multiplier": 2.0},
          "decay": {"optim.weight_decay": 1e-4}, "drop": {"model.dropout_rate": 0.3},
          "blocks": {"model.block_dropout_rate": 0.2}, "weighted": {"imbalance.class_weighting": "inverse"}}
  jobs, configs = _jobs_and_configs(tiny_config, arms)
  name = lambda unit: sorted(f"{j.arm}/{j.seed}" for j in unit)
  units = runner.population_units(jobs, configs, "always")
  assert sorted(map(name, units)) == [
      ["base/0", "base/1", "drop/0", "drop/1", "fast/0", "fast/1", "weighted/0", "weighted/1"],
      ["blocks/0", "blocks/1"], ["decay/0", "decay/1"], ["wide/0", "wide/1"]]
  assert [len(u) for u in runner.population_units(jobs, configs, "always", size=5)] == [5, 3, 2, 2, 2]
  # No worker left idle: with 2 workers, one population of two arms' seeds is split in two, an arm each.
  assert sorted(map(name, runner.population_units(jobs[:4], configs, "always", parallel=2))) == [
      ["base/0", "base/1"], ["fast/0", "fast/1"]]
  wide_pool = runner.population_units(jobs, configs, "always", parallel=8)
  assert len(wide_pool) == 8 and sorted(sum(map(name, wide_pool), [])) == sorted(sum(map(name, units), []))
  assert all(len(u) == 1 for u in runner.population_units(jobs, configs, "never"))
  assert all(len(u) == 1 for u in runner.population_units(jobs, configs, "auto", gpus=False))
  assert max(len(u) for u in runner.population_units(jobs, configs, "auto", gpus=True)) == 8
  with pytest.raises(ablate.SweepError, match="--population='sometimes'"):
    runner.population_units(jobs, configs, "sometimes")


@pytest.mark.slow
def test_a_sweep_trains_an_arms_seeds_as_one_population_and_aggregates_them(tiny_config, tmp_path):
  tiny_config.num_epochs = 1
  sweep = ablate.Sweep(rundir.config_to_dict(tiny_config),
                       [ablate.Arm("base"), ablate.Arm("fast", {"optim.learning_rate": 3e-3})], [0, 1])
  log = []
  table = ablate.run_sweep(sweep, str(tmp_path / "sweep"), population="always", log=log.append)
  assert any(line.startswith("start ") and "one population" in line for line in log), log
  assert sum(line.startswith("start ") for line in log) == 1  # four runs, one worker
  assert {a["arm"]: a["final_val_accuracy"]["n"] for a in table["arms"]} == {"base": 2, "fast": 2}
  for arm, seed in (("fast", 1),):  # a member of another seed and rate
    workdir = ablate.run_dir(str(tmp_path / "sweep"), arm, seed)
    assert ablate.run_status(workdir) == "finished"
    alone = str(tmp_path / f"alone_{arm}{seed}")
    train.train_and_evaluate(ablate.config_from_dict(rundir.read_json(workdir, ablate.RUN_SPEC_FILE)["config"]),
                             alone)
    _assert_same_run(rundir.read_metrics(workdir), rundir.read_metrics(alone))
    assert rundir.read_json(workdir, ablate.RUN_RESULT_FILE)["status"] == "finished"


@pytest.mark.parametrize("fields, changed", [
    (dict(preset="seed_ex2", brightness=0.2, contrast=0.3, gamma=0.2),  # affine with zoom, flips, lighting
     dict(rotation_range=35.0, zoom_range=0.3, brightness=0.05, gamma=0.5, width_shift_range=0.05)),
    (dict(hue=0.1, saturation=0.4, contrast=0.3), dict(hue=0.3, saturation=1.5, contrast=0.1)),  # colour
])
def test_traced_augmentation_magnitudes_draw_what_constants_draw(fields, changed):
  """A population's members pass their augmentation's magnitudes as numbers: each draws the images its
  constants draw, member by member under vmap (both jitted, as the train step is). Not pixel for pixel where a
  warp and colour jitter meet: dm-pix's hue conversion turns the warp's round-off into jumps at some pixels,
  as it does between an eager and a jitted call of the same constants."""
  params, other = augment.from_config(fields), augment.from_config({**fields, **changed})
  assert augment.structure(other) == augment.structure(params)
  assert augment.structure(augment.from_config({**fields, "contrast": 0.0})) != augment.structure(params)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 12, 12, 3)), jnp.float32)
  ids, key = jnp.arange(6), jax.random.key(3)
  stacked = {k: jnp.asarray([augment.magnitudes(params)[k], augment.magnitudes(other)[k]], jnp.float32)
             for k in augment.magnitudes(params)}
  members = jax.jit(jax.vmap(lambda m: augment.augment_batch(params, images, ids, key, magnitudes=m)))(stacked)
  for i, alone in enumerate((params, other)):
    constants = jax.jit(lambda p=alone: augment.augment_batch(p, images, ids, key))()
    np.testing.assert_allclose(members[i], constants, atol=2e-5)
  assert float(jnp.abs(members[0] - members[1]).max()) > 0.1  # the magnitudes do change the draw
  assert {f"augment.{f}" for f in augment.MAGNITUDES + ("zoom_range",)} <= set(config_fields.POPULATION_FIELDS)


def test_arms_of_another_augmentation_magnitude_train_as_one_population_when_the_program_is_the_same(tiny_config):
  tiny_config.augment.preset = "characters"  # rotation 10, shifts 0.1, zoom 0.1
  arms = {"base": {}, "rot20": {"augment.rotation_range": 20.0}, "same": {"augment.rotation_range": 10.0},
          "no_rotation": {"augment.rotation_range": 0.0}, "pixel_shift": {"augment.width_shift_range": 3.0}}
  jobs, configs = _jobs_and_configs(tiny_config, arms)
  units = runner.population_units(jobs, configs, "always")
  assert sorted(sorted(f"{j.arm}/{j.seed}" for j in u) for u in units) == [
      ["base/0", "base/1", "rot20/0", "rot20/1", "same/0", "same/1"], ["no_rotation/0", "no_rotation/1"],
      ["pixel_shift/0", "pixel_shift/1"]]


def test_members_of_another_rotation_each_get_their_own_augmentation_check(tiny_config, tmp_path):
  """A population's members that rotate by different angles share one training program but not one check: each
  member's augment_check.json is that of its own transforms, computed once per set of them."""
  from cnn_val import augment_check  # pylint: disable=import-outside-toplevel
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  tiny_config.num_epochs = 1
  tiny_config.augment.rotation_range = 10.0
  configs = [_member(tiny_config, 0, 1e-3), _member(tiny_config, 1, 1e-3), _member(tiny_config, 0, 2e-3)]
  configs[1].augment.rotation_range = 90.0
  dirs = [str(tmp_path / f"member{i}") for i in range(3)]
  population.train_population(configs, dirs)
  checks = [rundir.read_json(d, rundir.AUGMENT_CHECK_FILE) for d in dirs]
  assert [c["transforms"]["rotation_range"]["values"] for c in checks] == [
      {"rotation_range": 10.0}, {"rotation_range": 90.0}, {"rotation_range": 10.0}]
  splits, arrays = loading.load_data(configs[1])
  alone = augment_check.check(arrays["train"], arrays["validation"], augment.from_config(configs[1].augment),
                              splits.num_classes)
  assert checks[1]["transforms"] == json.loads(json.dumps(alone["transforms"]))
  assert checks[0] == checks[2]  # the same transforms: one check, written to both
  assert "augmentation check" in rundir.read_json(dirs[0], rundir.TIMING_FILE)["phases"]

"""`train_population(configs, workdirs)`: P runs that differ only in their seed, learning rate, weight decay,
dropout rates, class weights and augmentation magnitudes, trained at once in one process, each into its own
ordinary run directory.

The members' training states are stacked along a leading axis and one fused chunk (`steps.population_train_chunk`:
`jax.vmap` over the members inside the one `pmap`) trains all of them on one copy of the training split held on
the device, each with its own epoch order, dropout key and values of those fields. Everything else is what
`train.train_and_evaluate` does for each member, through the same functions: the audit, the pre-flight checks,
evaluation, metrics.jsonl, checkpoints, early stopping, the NaN record and the doctor. A member's run directory
is the one a separate run with its config writes (to float round-off: its values enter the step as numbers
rather than constants), and resumes as one.

Members join at the epoch their checkpoint reached (after a kill, one member may have saved an epoch more than
another) and leave when they stop early or diverge; the others go on. What may differ between members is
`POPULATION_FIELDS`, as long as the step's program stays the same (a rate or decay of 0 leaves its part out,
as does an augmentation magnitude of 0); a difference anywhere else (the model, the data, resampling, a
schedule, ...) is refused, since it changes the computation itself: such arms run as separate processes.

On a GPU, where the seed models are bound by launching work, 8 members train at 1.98x and 64 at 3.03x the
images/s of one (README, "Fused steps and populations on a GPU"). On the 2-core CPU a 3-seed verification
as populations took 0.56-0.61x of the time the code before populations and fused steps took (one worker),
against 0.67x for two separate workers of today's code; the ablation engine's `--population=auto` keeps to
separate processes there all the same (README, Ablations: the margin is small and separate runs are bit-exact).
"""

from __future__ import annotations

import contextlib
import json

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from cnn_val import (audit, augment, augment_check, config_check, config_fields, optim, parallel, rundir, steps,
                     train, train_loop, training_run)
from cnn_val.data import balance, pipeline

POPULATION_FIELDS = config_fields.POPULATION_FIELDS  # the config fields whose values may differ between members


class PopulationUnfit(ValueError):
  """These configs cannot train as one population (before anything is trained): train them one by one."""


def population_differences(configs) -> list[str]:
  """The fields (flattened, dotted) in which `configs` differ, outside `POPULATION_FIELDS`; [] when they can
  train as one population."""
  flat = [config_fields.flatten(rundir.config_to_dict(c)) for c in configs]
  fields = sorted(set().union(*flat))
  return [f for f in fields if f not in POPULATION_FIELDS and any(d.get(f) != flat[0].get(f) for d in flat[1:])]


def _why_apart(configs) -> str:
  """Why configs of different `config_fields.population_group`s cannot train as one population."""
  differ = population_differences(configs)
  if differ:
    return (f"The members of a population may differ only in {', '.join(POPULATION_FIELDS)}; these configs also "
            f"differ in {', '.join(differ[:8])}. Train them as separate runs (launch/ablate.py --population=never).")
  flat = [config_fields.flatten(rundir.config_to_dict(c)) for c in configs]
  for field in config_fields.POPULATION_ZEROS:
    if len({bool(d.get(field)) for d in flat}) > 1:
      return (f"A population's members either all set {field} or none does (0 leaves its part out of the step: "
              f"the optimizer's chain and checkpoints, or the dropout layer's random draws, differ otherwise): "
              f"train the members with {field}=0 as separate runs.")
  return ("A population's members may differ in their augmentation's magnitudes, not in which transforms run (a "
          "magnitude of 0 leaves its transform out), in shifts as fractions or pixels, flips, filling or "
          "standardisation: train these as separate runs.")


def check_population(configs, workdirs) -> None:
  """Refuses, with what to change, a population that cannot train as one (see the module's docstring)."""
  if not configs or len(configs) != len(workdirs):
    raise ValueError(f"A population needs one run directory per config: got {len(configs)} configs and "
                     f"{len(workdirs)} directories.")
  paths = [rundir.absolute(w) for w in workdirs]
  if len(set(paths)) != len(paths):
    raise ValueError(f"A population's members need run directories of their own; repeated: "
                     f"{sorted({p for p in paths if paths.count(p) > 1})}.")
  if len({config_fields.population_group(rundir.config_to_dict(c)) for c in configs}) > 1:  # as the engine groups them
    raise PopulationUnfit(_why_apart(configs))
  if any(c.get("profile_steps", 0) for c in configs):
    raise PopulationUnfit("config.profile_steps traces one run's steps: profile a single run (python -m cnn_val.main), "
                     "not a population.")
  if jax.process_count() > 1:
    raise PopulationUnfit("A population trains in one process; in a multi-process run, train one run at a time.")


def train_population(configs, workdirs) -> list[dict]:
  """Trains every `configs[m]` into `workdirs[m]` at once (resuming each from its latest checkpoint) and returns
  each member's last metrics row (for a member that diverged, the last before it, {} if none: its
  diverged.json says where)."""
  check_population(configs, workdirs)
  cpu_devices = parallel.use_cpu_devices(configs[0])  # before JAX's first operation
  for config in configs:
    config_check.validate(config)
  devices = parallel.select_devices(configs[0].num_devices)
  config_check.validate_batch_sizes(configs[0], len(devices))
  with contextlib.ExitStack() as stack:
    for workdir in workdirs:  # as train_and_evaluate: one training process per run directory
      stack.enter_context(rundir.run_lock(workdir))
    stop = stack.enter_context(train_loop.StopOnSignal())
    return _train(list(configs), list(workdirs), devices, cpu_devices, stop)


def _stack(trees):
  return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def _member(tree, i: int):
  return jax.tree.map(lambda x: x[i], tree)


def _train(configs, workdirs, devices, cpu_devices, stop) -> list[dict]:
  clock = train_loop.WallTime()  # one process: its timing.json is every member's
  for config, workdir in zip(configs, workdirs):
    rundir.write_or_check_config(workdir, config)
  base = configs[0]
  data = training_run.load(base, devices, cpu_devices, clock)
  members = len(configs)
  requested = int(base.get("steps_per_call", 1))
  chunk = requested if requested > 1 else train.AUTO_STEPS_PER_CALL
  fits, why = train.device_data_fits(data.train_arrays, devices)
  if not fits:
    raise PopulationUnfit(f"A population trains on the training split held on the device, which does not fit ({why}): "
                     f"train the members as separate runs (launch/ablate.py --population=never).")
  lacking = [w for w in workdirs if rundir.read_json(w, rundir.AUDIT_FILE) is None]
  if lacking:  # one dataset, one audit: written to every member that lacks it (_open_run then skips it)
    with clock("audit"):
      report = audit.cached_audit(data.arrays, data.num_classes, data.splits.class_names)
    for workdir in lacking:
      rundir.write_json(workdir, rundir.AUDIT_FILE, report)
  checks = {}  # members of the same transforms share one augmentation check (_open_run then skips it)
  for config, workdir in zip(configs, workdirs):
    params = augment.from_config(config.augment)
    if augment_check.transforms(params) and rundir.read_json(workdir, rundir.AUGMENT_CHECK_FILE) is None:
      key = json.dumps(augment_check.key(params))
      if key not in checks:
        with clock("augmentation check"):
          checks[key] = augment_check.cached_check(data.arrays, params, data.num_classes)
      if checks[key] is not None:
        augment_check.write(workdir, checks[key])
  runs, finished = [], set()
  try:
    for m, (config, workdir) in enumerate(zip(configs, workdirs)):
      runs.append(training_run.open_run(config, workdir, data, clock))
      runs[-1].label = f"[member {m + 1}/{members}, seed {config.seed}] "
      if not runs[-1].epochs_left:
        finished.add(m)
    evaluator = training_run.Evaluator(
        steps.pmapped_steps(base, data.num_classes, runs[0].tx, devices, **data.loss_terms).eval,
        data, base, devices)
    # The members' own class weights come with each chunk's values and replace the shared ones.
    p_chunk = steps.population_train_chunk(base, data.num_classes, data.steps_per_epoch, devices, **data.loss_terms)
    with clock("training split to the device"):
      device_data = parallel.replicate({"image": data.train_arrays["image"], "label": data.train_arrays["label"]},
                                       devices)
    logging.info("Population of %d members (%s), trained at once: %d train steps per host call on the training "
                 "split held on the device.", members, ", ".join(f"seed {c.seed} lr {c.optim.learning_rate:g} "
                                                               f"wd {c.optim.weight_decay:g}" for c in configs), chunk)
    progress = [train_loop.Progress(r.config, data.total_steps, r.schedule, check=None, writer=r.writer,
                                    prefix=r.label, quiet=m >= 4) for m, r in enumerate(runs)]
    _epochs(runs, finished, data, device_data, p_chunk, chunk, evaluator, progress, devices, stop, clock)
  finally:
    for run in runs:
      training_run.close(run, clock)
  rows = []
  for run in runs:
    if rundir.read_json(run.workdir, rundir.DIVERGED_FILE) is None:
      with clock("doctor"):
        training_run.run_doctor(run.config, run.workdir)
    training_run.summary(run.workdir, clock)
    rows.append(run.row)
  return rows


def _class_weights(runs, data) -> list | None:
  """Each member's class weights (`config.imbalance`; 1 for every class where a member weights none), or None
  when no member weights its classes (the step then multiplies by nothing, as a run alone)."""
  members = [balance.class_weights(data.counts, r.config.imbalance.class_weighting, r.config.imbalance.beta)
             for r in runs]
  if all(w is None for w in members):
    return None
  return [np.ones(data.num_classes) if w is None else np.asarray(w) for w in members]


def _epochs(runs, finished: set, data, device_data, p_chunk, chunk: int, evaluator, progress, devices, stop,
            clock) -> None:
  """The population's epochs: each trains the members that have reached it and are not finished, then
  evaluates, records and checkpoints each of them as its own run."""
  spe, num_epochs = data.steps_per_epoch, runs[0].config.num_epochs
  weights = _class_weights(runs, data)
  magnitudes = [augment.magnitudes(augment.from_config(r.config.augment)) for r in runs]
  if all(m == magnitudes[0] for m in magnitudes):  # the same for all: constants in the step, as a run alone
    magnitudes = None
  starts = {m: r.start_step // spe for m, r in enumerate(runs)}
  workdirs = ", ".join(r.workdir for r in runs)

  def _interrupt(signum, at_step):
    resume = [r.ckpts.latest_step() for r in runs]
    raise training_run.TrainingInterrupted(signum, at_step, workdirs, None if None in resume else min(resume))

  epoch = 0
  while True:
    unfinished = [m for m in range(len(runs)) if m not in finished]
    if not unfinished:
      break
    epoch = max(epoch, min(starts[m] for m in unfinished))  # a member whose checkpoint is ahead joins there
    if epoch >= num_epochs:
      break
    active = [m for m in unfinished if starts[m] <= epoch]
    order = dict(global_batch=runs[0].config.batch_size, num_devices=len(devices), epoch=epoch,
                 num_classes=data.num_classes, resampling=runs[0].config.imbalance.resampling)
    indices = [pipeline.train_indices(data.train_arrays["label"], seed=runs[m].config.seed, **order) for m in active]
    values = {f: jnp.asarray([runs[m].config.optim[f] for m in active], jnp.float32)
              for f in optim.POPULATION_FIELDS}
    values.update({f: jnp.asarray([runs[m].config.model.get(f, 0.0) for m in active], jnp.float32)
                   for f in steps.MODEL_POPULATION_FIELDS})
    if weights is not None:
      values["class_weights"] = jnp.asarray(np.stack([weights[m] for m in active]), jnp.float32)
    if magnitudes is not None:
      values.update({f"augment.{k}": jnp.asarray([magnitudes[m][k] for m in active], jnp.float32)
                     for k in magnitudes[0]})
    keys = jnp.stack([runs[m].dropout_key for m in active])
    calls = train_loop.population_chunk_calls(p_chunk, device_data, indices, keys, chunk, values)
    with clock("train steps"):
      state, step, sums = train_loop.train_epoch(
          calls, _stack([runs[m].state for m in active]), step=epoch * spe, epoch=epoch + 1,
          progress=[progress[m] for m in active], stop=stop, on_stop=_interrupt, clock=clock, members=len(active))
    for i, m in enumerate(active):
      run = runs[m]
      run.state = _member(state, i)
      member_sums = {k: v[i] for k, v in sums.items()}
      try:
        training_run.check_finite(member_sums, step, run.workdir, run.ckpts)
      except training_run.NonFiniteLossError as e:  # this member stops here; the others go on
        logging.error("%s%s", run.label, e)
        training_run.record_divergence(run, e)
        finished.add(m)
        continue
      outcome = training_run.end_of_epoch(run, evaluator, member_sums, step, epoch, clock)
      if outcome == "stopped":
        finished.add(m)
      elif outcome == "evaluated":
        progress[m].restart(step)
    epoch += 1

"""Running a sweep: every unfinished (arm, seed) in its own worker process (`python -m cnn_val.ablate_worker`),
`parallel` at a time with the CPU cores (and GPUs) split between them, resumable, within a budget."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from cnn_val import ablate_worker, audit, config_fields, rundir
from cnn_val.ablate.cluster import EXECUTORS, SlurmOptions, execute as execute_on_cluster
from cnn_val.ablate.results import write_results
from cnn_val.ablate.sweep import (CACHE_DIR, LOCK_FILE, RESULTS_MD, RUN_RESULT_FILE, RUN_SPEC_FILE, SWEEP_FILE,
                                  Sweep, SweepError, SweepIncomplete, epochs_trained, expected_epochs, run_config,
                                  run_dir, run_status, seconds_per_epoch)


def _core_groups(parallel: int) -> list[list[int] | None]:
  """The CPU cores each worker may use: the process's cores split into `parallel` disjoint groups."""
  try:
    cores = sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return [None] * parallel
  if parallel <= 1 or len(cores) < parallel:
    return [None] * parallel
  return [cores[i::parallel] for i in range(parallel)]


def _gpu_groups(parallel: int) -> list[str | None]:
  """Visible GPUs split between workers (CUDA_VISIBLE_DEVICES): several per worker, one each, or, with more
  workers than GPUs, each GPU shared by the workers i, i + len(gpus), ... (the seed models use a few percent
  of a modern GPU, and most of a short run's time is host work: several runs at once use it better)."""
  if parallel <= 1:
    return [None]
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is None:
    try:
      listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
      return [None] * parallel
    visible = ",".join(str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU"))
  gpus = [g for g in visible.split(",") if g.strip()]
  if parallel <= 1 or not gpus:
    return [None] * parallel
  if len(gpus) < parallel:
    return [gpus[i % len(gpus)] for i in range(parallel)]
  return [",".join(gpus[i::parallel]) for i in range(parallel)]


def _gpu_env(env: dict, gpus: str | None, groups: list[str | None]) -> None:
  """CUDA_VISIBLE_DEVICES for a worker; on a GPU other workers share, memory is allocated as needed instead of
  JAX's default 75% of the GPU up front (which would leave the next worker on it out of memory), unless the
  user set XLA_PYTHON_CLIENT_PREALLOCATE or XLA_PYTHON_CLIENT_MEM_FRACTION."""
  if gpus is None:
    return
  env["CUDA_VISIBLE_DEVICES"] = gpus
  if groups.count(gpus) > 1 and not {"XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION"} & set(env):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"


@dataclasses.dataclass
class _Job:
  arm: str
  seed: int
  workdir: str
  attempts: int = 0  # over every call (recorded in ablate.json)
  seconds: float = 0.0
  restarts: int = 0  # in this call: a run killed again and again is given up, not restarted forever


class _Worker:
  """One worker process training `jobs`: a single run, or several as one population (`cnn_val.population`)."""

  def __init__(self, jobs: list[_Job], cores, gpus, cache_dir: str, log: Callable[[str], None],
               gpu_groups: list[str | None] = ()):
    self.jobs, self.start = jobs, time.monotonic()
    env = dict(os.environ)
    # Runs of a sweep compile the same programs (seeds change data, not shapes): share XLA's compilations
    # through JAX's persistent cache (measured: a tiny run 23 s -> 13 s); a cache the user set is kept.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", cache_dir)
    # Every compilation, not only those over JAX's default 1 s: a run's many small ones (model init op by op,
    # the eval and probe steps) add up. The second run of a 1-epoch sweep on 5,000 examples, beside other
    # work: model and optimizer init 4.1 -> 1.0 s, timing.json's total 26.8 -> 21.2 s.
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # ... and the audit of the same data (audit.cached_audit: keyed by the data's bytes).
    env.setdefault(audit.CACHE_ENV, cache_dir + "_audit")
    _gpu_env(env, gpus, list(gpu_groups))
    # The worker pins itself to its cores and arranges to die with this process (ablate_worker.py): done
    # there, not in a preexec_fn, which would fork this multithreaded process.
    env[ablate_worker.PARENT_ENV] = str(os.getpid())
    if cores is not None:
      env[ablate_worker.CORES_ENV] = ",".join(map(str, cores))
    for job in jobs:
      job.attempts += 1
    self.log_path = os.path.join(jobs[0].workdir, "train.log")  # a population's log: its first member's
    for job in jobs[1:]:
      with open(os.path.join(job.workdir, "train.log"), "a") as f:
        f.write(f"Trained in a population of {len(jobs)} runs in one process; its log: {self.log_path}\n")
    self._log_file = open(self.log_path, "a")  # pylint: disable=consider-using-with
    try:
      self.proc = subprocess.Popen([sys.executable, "-m", "cnn_val.ablate_worker"] + [j.workdir for j in jobs],
                                   env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    except OSError:
      self._log_file.close()
      raise
    names = ", ".join(f"{j.arm}/seed{j.seed}" for j in jobs)
    log(f"start {names}" + (" (one population, " if len(jobs) > 1 else " (") + f"attempt {jobs[0].attempts}, "
        f"pid {self.proc.pid}" + (f", cores {cores}" if cores else "") + (f", GPUs {gpus}" if gpus else "") + ")")

  def poll(self):
    rc = self.proc.poll()
    if rc is not None:
      self.close()
      share = (time.monotonic() - self.start) / len(self.jobs)  # a population's members share its wall time
      for job in self.jobs:
        job.seconds += share
    return rc

  def close(self):
    self._log_file.close()


def sweep_lock(out: str):
  """One sweep process per directory (rundir.exclusive_lock: a SIGKILLed sweep never blocks its own resume)."""
  return rundir.exclusive_lock(os.path.join(out, LOCK_FILE), lambda holder: SweepError(
      f"{out} is being run by {holder}; wait for it to finish (or stop it), then run the same command again to "
      f"resume."))


def prepare(sweep: Sweep, out: str) -> None:
  """Checks that `out` holds no other sweep (a different base config, or an arm of the same name with other
  overrides is refused), then writes sweep.json: the sweep is what this call names (arms or seeds left out
  stay on disk but are no longer aggregated)."""
  old = rundir.read_json(out, SWEEP_FILE)
  new = sweep.to_json()
  if old is not None:
    changed = list(config_fields.config_changes(old["base"], new["base"]))  # as a run directory's resume counts them
    if changed:
      raise SweepError(f"{out} holds a sweep of a different base config (fields {', '.join(changed[:8])}); use a "
                       f"new --out, or the same config and overrides as before.")
    old_arms = {a["name"]: a["overrides"] for a in old["arms"]}
    for a in new["arms"]:
      if a["name"] in old_arms and old_arms[a["name"]] != a["overrides"]:
        raise SweepError(f"Arm {a['name']!r} in {out} had overrides {old_arms[a['name']]}, now {a['overrides']}; "
                         f"give the changed arm a new name, or remove {os.path.join(out, 'runs', a['name'])}.")
  rundir.write_json(out, SWEEP_FILE, new)


def estimate_minutes(per_run_s: float, runs: int, parallel: int) -> float:
  return per_run_s * math.ceil(runs / max(parallel, 1)) / 60.0


def run_sweep(sweep: Sweep, out: str, *, parallel: int = 1, max_runs: int = 0, budget_minutes: float = 0.0,
              retries: int = 1, log: Callable[[str], None] = print, executor: str = "local",
              slurm: SlurmOptions | None = None, population: str = "auto", population_size: int = 0) -> dict:
  """Trains every (arm, seed) of `sweep` that is not finished in `out`, `parallel` at a time, then writes
  results.csv/md and plots. Returns the aggregate (see `aggregate`).

  `executor`: `local` (worker processes on this machine), `slurm` (one SLURM job array through submitit,
  `parallel` tasks at a time, `slurm` options) or `submitit_local` (the same submission path as processes here);
  see cluster.py. The budget estimate applies to the local pool only.

  `population`: 'never' (a worker per run), 'always' (the runs whose configs differ only in the population
  fields, such as an arm's seeds, train as one population per worker, at most `population_size` each;
  `population_units`, `cnn_val.population`) or 'auto' (populations where a GPU is at hand). The local
  executor only.

  A run whose worker dies from a signal is retried `retries` times (it resumes from its checkpoint); a run
  that fails otherwise is reported with its log, and the other runs go on. `max_runs` refuses a sweep with
  more runs to train; `budget_minutes` refuses to go on once the first run's time says the rest would not fit.
  """
  if parallel < 1:
    raise SweepError(f"--parallel={parallel}: expected 1 or more worker processes.")
  if executor not in EXECUTORS:
    raise SweepError(f"--executor={executor!r}: expected one of {', '.join(EXECUTORS)}.")
  if not rundir.is_local(out):
    raise SweepError(f"--out={out}: a sweep directory must be a path its workers share (a local or network "
                     f"disk, as a SLURM cluster mounts): its workers log, lock and hand over run specs there. "
                     f"Single runs train into URLs (--workdir=gs://...); copy the sweep there afterwards.")
  with sweep_lock(out):
    jobs, finished = [], []
    for arm in sweep.arms:
      for seed in sweep.seeds:
        workdir = run_dir(out, arm.name, seed)
        record = rundir.read_json(workdir, RUN_RESULT_FILE) or {}
        if run_status(workdir) in ("finished", "diverged"):
          finished.append(workdir)
        else:
          jobs.append(_Job(arm.name, seed, workdir, record.get("attempts", 0), record.get("seconds", 0.0)))
    total = len(sweep.arms) * len(sweep.seeds)
    log(f"Sweep {out}: {len(sweep.arms)} arms x {len(sweep.seeds)} seeds = {total} runs, {total - len(jobs)} "
        f"already finished, {len(jobs)} to train, {parallel} at a time.")
    if max_runs and len(jobs) > max_runs:
      raise SweepError(f"{len(jobs)} runs to train, more than --max_runs={max_runs}. Shrink the sweep (fewer "
                       f"--seeds or arms), or raise --max_runs; finished runs are kept and never retrained.")
    prepare(sweep, out)  # only now: a refused sweep leaves the directory as it was
    configs = {}
    for job in jobs:
      arm = next(a for a in sweep.arms if a.name == job.arm)
      configs[job.workdir] = run_config(sweep.base, arm.overrides, job.seed)
      rundir.write_json(job.workdir, RUN_SPEC_FILE, {"arm": job.arm, "seed": job.seed, "config": configs[job.workdir]})
    def per_run_s(done: list[str]) -> float | None:
      """What a run still to train is expected to take: the `done` runs' mean time an epoch times the mean epochs
      the runs to train are expected to train (sweep.expected_epochs); None where no done run trained an epoch."""
      rates = [r for r in map(seconds_per_epoch, done) if r]
      return (float(np.mean(rates)) * float(np.mean([expected_epochs(configs[j.workdir], done) for j in jobs]))
              if rates and jobs else None)
    per_run = per_run_s(finished) if jobs and budget_minutes else None
    if per_run:
      _check_budget(per_run, len(jobs), parallel, budget_minutes, log, "finished runs' mean")
    cache_dir = os.path.abspath(os.path.join(out, CACHE_DIR))
    if executor == "local":
      units = population_units(jobs, configs, population, population_size, parallel)
      failures = _execute(units, parallel, budget_minutes, bool(per_run), retries, log, cache_dir,
                          lambda done: per_run_s(finished + done))
    else:
      if population == "always":
        log(f"--population applies to the local executor: each {executor} task trains one run.")
      failures = execute_on_cluster(jobs, kind=executor, out=out, parallel=parallel, slurm=slurm or SlurmOptions(),
                                    cache_dir=cache_dir, log=log,
                                    record=lambda job, rc: _record(job, rc, log) in ("finished", "diverged"))
    table = write_results(out)
    log(f"Results: {os.path.join(out, RESULTS_MD)}")
    if failures:
      raise SweepIncomplete("Runs failed (see their logs; the same command again retries them): "
                       + "; ".join(f"{j.arm}/seed{j.seed} (exit {rc}, {j.workdir}/train.log)" for j, rc in failures))
    return table


def _check_budget(per_run_s, remaining, parallel, budget_minutes, log, source, spent_s=0.0):
  minutes = estimate_minutes(per_run_s, remaining, parallel)
  log(f"Estimate: {remaining} runs left at {per_run_s:.0f} s each ({source}), {parallel} at a time: "
      f"{minutes:.1f} min more.")
  if spent_s / 60 + minutes > budget_minutes:
    raise SweepIncomplete(
        f"Over budget: {remaining} more runs need about {minutes:.1f} min against --budget_minutes="
        f"{budget_minutes:g} ({spent_s / 60:.1f} min already spent). Shrink the sweep (fewer --seeds or arms, "
        f"a shorter --config.num_epochs), raise --parallel where cores allow, or raise --budget_minutes; "
        f"finished runs are kept.")


INTERRUPTED_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # a worker that stopped on a signal


def _record(job: _Job, rc: int, log, epochs: int | None = None) -> str:
  """Files a run's outcome (ablate.json: wall time, attempts, exit code, status, and the epochs its time paid for:
  a population's members share the time of its longest, `epochs`; else the run's own) and returns its status."""
  status = run_status(job.workdir)
  rundir.write_json(job.workdir, RUN_RESULT_FILE,
                    {"seconds": round(job.seconds, 2), "attempts": job.attempts, "returncode": rc, "status": status,
                     "epochs": epochs or epochs_trained(job.workdir)})
  if status in ("finished", "diverged"):
    log(f"done  {job.arm}/seed{job.seed}: {status} in {job.seconds:.0f} s")
  return status


POPULATIONS = ("never", "auto", "always")


def have_gpus() -> bool:
  """Whether this machine shows the workers a GPU (CUDA_VISIBLE_DEVICES, else nvidia-smi), without starting JAX."""
  return any(g is not None for g in _gpu_groups(2))


def population_units(jobs: list[_Job], configs: dict, population: str, size: int = 0, parallel: int = 1,
                     gpus: bool | None = None) -> list[list[_Job]]:
  """The jobs as worker units: each its own (`population='never'`, or 'auto' without a GPU), or, with
  populations, the jobs whose configs differ only in `config_fields.POPULATION_FIELDS` together (seeds of one arm,
  arms of another learning rate, weight decay, dropout rate, class weighting or augmentation magnitude, of the
  same program: `config_fields.population_group`), at most `size` per unit (0 = no limit), and split further until
  there are `parallel` units where there are enough runs (a population never leaves a worker idle).
  `configs`: the jobs' run configs (dicts) by workdir.

  'auto' trains populations where a GPU is at hand: there 8 seed-model members train at 1.98x the images/s of
  one. On this 2-core CPU populations beat two separate workers by about 10% in a 3-seed verification (README):
  a small margin, and separate runs reproduce a run alone bit for bit (a population's members to float
  round-off), so 'auto' keeps a worker per run there."""
  if population not in POPULATIONS:
    raise SweepError(f"--population={population!r}: expected one of {', '.join(POPULATIONS)}.")
  if population == "never" or (population == "auto" and not (have_gpus() if gpus is None else gpus)):
    return [[job] for job in jobs]
  groups: dict[str, list[_Job]] = {}
  for job in jobs:
    groups.setdefault(config_fields.population_group(configs[job.workdir]), []).append(job)
  units = []
  for group in groups.values():
    step = size if size > 0 else len(group)
    units += [group[i:i + step] for i in range(0, len(group), step)]
  while len(units) < parallel and any(len(u) > 1 for u in units):
    big = max(units, key=len)
    at = units.index(big)
    units[at:at + 1] = [big[:(len(big) + 1) // 2], big[(len(big) + 1) // 2:]]
  return units


def _execute(units: list[list[_Job]], parallel: int, budget_minutes: float, estimated: bool, retries: int, log,
             cache_dir: str, per_run_s: Callable[[list[str]], float | None] = lambda done: None):
  cores, gpus = _core_groups(parallel), _gpu_groups(parallel)
  free, pending, running, failures = list(range(parallel)), list(units), {}, []
  start = time.monotonic()
  try:
    while pending or running:
      while pending and free:
        slot = free.pop(0)
        running[slot] = _Worker(pending.pop(0), cores[slot], gpus[slot], cache_dir, log, gpu_groups=gpus)
      time.sleep(0.2)
      for slot, worker in list(running.items()):
        rc = worker.poll()
        if rc is None:
          continue
        del running[slot]
        free.append(slot)
        epochs = max((epochs_trained(job.workdir) or 0 for job in worker.jobs), default=0)  # the longest member's
        statuses = {id(job): _record(job, rc, log, epochs) for job in worker.jobs}
        unfinished = [job for job in worker.jobs if statuses[id(job)] not in ("finished", "diverged")]
        per_run = (per_run_s([job.workdir for job in worker.jobs if job not in unfinished])
                   if len(unfinished) < len(worker.jobs) and budget_minutes and not estimated else None)
        if per_run:
          estimated = True
          _check_budget(per_run, sum(len(u) for u in pending) + sum(len(w.jobs) for w in running.values())
                        + len(unfinished), parallel, budget_minutes, log, "the first run",
                        spent_s=time.monotonic() - start)
        if not unfinished:
          continue
        if (rc < 0 or rc in INTERRUPTED_EXIT_CODES) and unfinished[0].restarts < retries:
          for job in unfinished:
            job.restarts += 1
          names = ", ".join(f"{j.arm}/seed{j.seed}" for j in unfinished)
          log(f"{names} was killed (signal {-rc}); resuming it from its checkpoint." if len(unfinished) == 1 else
              f"{names} (one population) were killed (signal {-rc}); resuming them from their checkpoints.")
          pending.insert(0, unfinished)
        else:
          for job in unfinished:
            log(f"FAILED {job.arm}/seed{job.seed} (exit {rc}); its log: {worker.log_path}")
            failures.append((job, rc))
  finally:
    for worker in running.values():  # over budget or interrupted: stop cleanly, the runs resume later
      with contextlib.suppress(ProcessLookupError):
        worker.proc.terminate()
    for worker in running.values():
      with contextlib.suppress(subprocess.TimeoutExpired):
        worker.proc.wait(timeout=30)
      worker.close()
  return failures

"""A sweep's runs on a cluster scheduler through submitit: one SLURM job array, one run directory per task.

`run_sweep(..., executor="slurm")` submits every unfinished (arm, seed) as one task of a SLURM job array
(`submitit.AutoExecutor`, `slurm_array_parallelism` = `parallel`), waits for the tasks and aggregates exactly as
the local pool does; `executor="submitit_local"` runs the same submission path as processes on this machine
(submitit's LocalExecutor: what the tests use, and a dry run of a cluster sweep). Each task runs
`python -m cnn_val.ablate_worker RUN_DIR` (the local pool's worker: same exit codes, log in RUN_DIR/train.log),
so a run directory is written the same way wherever it trained. submitit's own files (the pickled task,
stdout/stderr of the job) go to OUT/submitit/.

A preempted or timed-out task leaves its run resumable from its last checkpoint: run the same command again
and the unfinished runs are submitted again (a run still training elsewhere holds its lock, and the second
task exits 75 without touching it).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Callable

from cnn_val import audit

EXECUTORS = ("local", "slurm", "submitit_local")
SUBMITIT_DIR = "submitit"


@dataclasses.dataclass
class SlurmOptions:
  """What a SLURM task asks for (submitit's AutoExecutor parameters); ignored by submitit_local."""
  partition: str = ""
  timeout_min: int = 240
  gpus_per_task: int = 0
  cpus_per_task: int = 0  # 0 = the scheduler's default
  mem_gb: float = 0.0  # 0 = the scheduler's default


class RunTask:
  """The picklable task: train one run directory in a worker process; returns (exit code, seconds)."""

  def __init__(self, cache_dir: str):
    self.cache_dir = cache_dir

  def __call__(self, workdir: str) -> tuple[int, float]:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", self.cache_dir)  # the sweep's shared compilation cache
    env.setdefault(audit.CACHE_ENV, self.cache_dir + "_audit")  # and audit of the same data
    start = time.monotonic()
    with open(os.path.join(workdir, "train.log"), "a") as log:
      rc = subprocess.run([sys.executable, "-m", "cnn_val.ablate_worker", workdir], env=env, stdout=log,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False).returncode
    return rc, time.monotonic() - start


def _submitit():
  try:
    import submitit  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("--executor=slurm/submitit_local needs submitit: pip install -e '.[cluster]' (or pip install "
                     "submitit), or use --executor=local.") from None
  return submitit


def make_executor(kind: str, out: str, parallel: int, slurm: SlurmOptions):
  submitit = _submitit()
  folder = os.path.join(out, SUBMITIT_DIR, "%j")
  executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if kind == "slurm" else "local")
  params = {"timeout_min": slurm.timeout_min, "slurm_array_parallelism": parallel, "name": "cnn_val_sweep"}
  if kind == "slurm":
    params.update(gpus_per_node=slurm.gpus_per_task, tasks_per_node=1, nodes=1)
    if slurm.partition:
      params["slurm_partition"] = slurm.partition
    if slurm.cpus_per_task:
      params["cpus_per_task"] = slurm.cpus_per_task
    if slurm.mem_gb:
      params["mem_gb"] = slurm.mem_gb
  executor.update_parameters(**params)
  return executor


def execute(jobs: list, *, kind: str, out: str, parallel: int, slurm: SlurmOptions, cache_dir: str,
            log: Callable[[str], None], record: Callable) -> list:
  """Submits `jobs` (runner._Job) as one job array and waits for them; `record(job, rc)` files each outcome as
  the local pool does. Returns [(job, exit code)] of the failed runs (a task the scheduler lost counts -1)."""
  if not jobs:
    return []
  executor = make_executor(kind, out, parallel, slurm)
  task = RunTask(cache_dir)
  with executor.batch():  # one array job on SLURM
    futures = [executor.submit(task, job.workdir) for job in jobs]
  ids = [f.job_id for f in futures]
  log(f"Submitted {len(jobs)} runs as {kind} job(s) {ids[0]}{' ... ' + ids[-1] if len(ids) > 1 else ''} "
      f"(submitit files in {os.path.join(out, SUBMITIT_DIR)}); waiting for them.")
  failures = []
  for job, future in zip(jobs, futures):
    job.attempts += 1
    try:
      rc, seconds = future.result()
    except Exception as e:  # pylint: disable=broad-except  # the scheduler killed or lost the task
      rc, seconds = -1, 0.0
      log(f"{job.arm}/seed{job.seed}: task {future.job_id} ended without a result ({type(e).__name__}: "
          f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); its run resumes on the next call.")
    job.seconds += seconds
    if not record(job, rc):
      log(f"FAILED {job.arm}/seed{job.seed} (exit {rc}); its log: {os.path.join(job.workdir, 'train.log')}")
      failures.append((job, rc))
  return failures

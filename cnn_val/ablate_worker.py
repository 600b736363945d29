"""One run of a sweep, in its own process: `python -m cnn_val.ablate_worker RUN_DIR [RUN_DIR ...]` (several: one
population, `cnn_val.population`).

The ablation engine (cnn_val/ablate/runner.py) starts one per run. It trains RUN_DIR/run_spec.json's config into
RUN_DIR with the ordinary `train.train_and_evaluate` (so a killed run resumes from its checkpoint). Exit
codes: 0 trained; 1 stopped on NaN/Inf (diverged.json says where: an outcome, not a failure) or crashed
(the log has the traceback); 2 a bad config or data (the message says what to change); 75 the run directory
is locked by another worker; 130/143 interrupted by SIGINT/SIGTERM (the run resumes from its checkpoint).
"""

import os

PARENT_ENV, CORES_ENV = "CNN_VAL_SWEEP_PID", "CNN_VAL_WORKER_CORES"


def _attach_to_sweep() -> None:
  """Before anything sizes a thread pool: pin to the cores the engine gave this worker, and die with the
  engine (Linux PR_SET_PDEATHSIG), so that no orphaned worker keeps writing a run directory that the next
  sweep resumes. Done here rather than in a preexec_fn, which would fork the multithreaded engine."""
  if os.environ.get(CORES_ENV) and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, [int(c) for c in os.environ[CORES_ENV].split(",")])
  if PARENT_ENV in os.environ:
    try:
      import ctypes  # pylint: disable=import-outside-toplevel
      import signal  # pylint: disable=import-outside-toplevel
      ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass  # not Linux: an orphan finishes its run; the run's lock (rundir.run_lock) still keeps a second one out
    if os.getppid() != int(os.environ[PARENT_ENV]):  # the engine died before the line above took effect
      os._exit(137)  # pylint: disable=protected-access


if __name__ == "__main__":
  _attach_to_sweep()

# pylint: disable=wrong-import-position
import json
import sys

from absl import app
from absl import logging


def _train_population(workdirs, configs) -> None:
  """Several run directories at once as one population (the engine's --population); configs that cannot
  train so (PopulationUnfit: checked before anything trains) train one after another instead."""
  from cnn_val import population, train  # pylint: disable=import-outside-toplevel
  try:
    population.train_population(configs, workdirs)
  except population.PopulationUnfit as e:
    logging.warning("Not trained as one population (%s): one run after another instead.", e)
    for config, workdir in zip(configs, workdirs):
      try:
        train.train_and_evaluate(config, workdir)
      except train.NonFiniteLossError as error:  # an outcome (diverged.json); the next run goes on
        logging.error("%s", error)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("Usage: python -m cnn_val.ablate_worker RUN_DIR [RUN_DIR ...] (a sweep's runs/<arm>/seed<k>; "
                         "several: trained as one population).")
  workdirs = argv[1:]
  from cnn_val import ablate, cli, rundir, train  # pylint: disable=import-outside-toplevel
  cli.keep_tensorflow_off_accelerators()
  configs = []
  for workdir in workdirs:
    with open(os.path.join(workdir, ablate.RUN_SPEC_FILE)) as f:
      configs.append(ablate.config_from_dict(json.load(f)["config"]))
  try:
    if len(workdirs) == 1:
      train.train_and_evaluate(configs[0], workdirs[0])  # holds the run's lock
    else:
      _train_population(workdirs, configs)  # a member that diverges is an outcome: the others go on
  except rundir.RunLockedError as e:
    logging.error("%s", e)
    raise SystemExit(75) from None
  except train.NonFiniteLossError as e:
    logging.error("%s", e)
    raise SystemExit(1) from None
  except train.TrainingInterrupted as e:  # the sweep stopping its workers (SIGTERM): resumable
    logging.warning("%s", e)
    raise SystemExit(e.exit_code) from None
  except (ValueError, FileNotFoundError) as e:  # config and data errors carry their own instructions
    logging.error("%s", e)
    raise SystemExit(2) from None


if __name__ == "__main__":
  try:
    app.run(main)
  except KeyboardInterrupt:  # the run resumes from its latest checkpoint
    sys.exit(130)

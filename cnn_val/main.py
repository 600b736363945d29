"""Trains and evaluates a CNN: `python -m cnn_val.main --config=configs/default.py --workdir=runs/default`.

Flags only; the work is `cnn_val.train.train_and_evaluate(config, workdir)`. Override any config field on
the command line, e.g. `--config.num_epochs=5 --config.model.dropout_rate=0.3`; the config is locked, so a
misspelt field fails with its name.
"""

import logging as py_logging

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cnn_val import cli, parallel, train

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; an existing run resumes).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
# One run over several processes (jax.distributed): launch/multiprocess.sh on one machine, launch/slurm_train.sh
# on a SLURM cluster, launch/tpu_pod.sh on a Cloud TPU pod.
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join a multi-process run, detected by JAX (SLURM, Open MPI, "
                                 "Cloud TPU); implied by --coordinator_address.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the run (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(py_logging.Filter):
  """Keeps orbax's per-save INFO chatter out of the progress log (warnings and errors still show)."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  cli.keep_tensorflow_off_accelerators()
  if _DISTRIBUTED.value or _COORDINATOR.value:  # before JAX's first operation, after its CPU device count
    parallel.use_cpu_devices(_CONFIG.value)
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.NonFiniteLossError as e:  # an outcome of training, not a bug: the message, no traceback
    logging.error("%s The doctor's diagnosis is in %s/report.md.", e, _WORKDIR.value)
    raise SystemExit(1) from None
  except train.TrainingInterrupted as e:  # SIGINT/SIGTERM: stopped at a step boundary, resumable
    logging.warning("%s", e)
    raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
  cli.run(main)

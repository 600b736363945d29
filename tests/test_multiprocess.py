"""One run over two processes on this machine (jax.distributed, CPU collectives through gloo), launched by
launch/multiprocess.sh: the same metrics as one process with the same total devices and global batch, and a
SIGKILL of one process resumes, with the same command, to the uninterrupted run's metrics."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnn_val import rundir
from tests.test_train import REPO

# Each process sets its own CPU device count (config.cpu_devices); the suite's forced 4 devices would override it.
ENV = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHON": sys.executable}


def _flags(workdir, data_dir, cpu_devices, preflight=False):
  return ["--config=configs/default.py", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.data.download=False", "--config.num_epochs=2", "--config.batch_size=16",
          "--config.eval_batch_size=64", "--config.log_every_steps=10", "--config.optim.decay_steps=40",
          "--config.doctor=False", f"--config.preflight={preflight}", f"--config.cpu_devices={cpu_devices}"]


def _two_processes(workdir, data_dir, preflight=False, stop_grace_s=20):
  # Launches of the same run share XLA's compilations through JAX's persistent cache (next to the runs).
  env = {**ENV, "JAX_COMPILATION_CACHE_DIR": os.path.join(os.path.dirname(workdir), "cache"),
         "CNN_VAL_STOP_GRACE_S": str(stop_grace_s)}
  return subprocess.Popen(["bash", "launch/multiprocess.sh", "2", *_flags(workdir, data_dir, 1, preflight)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _assert_close(rows, expected):
  assert [r["step"] for r in rows] == [r["step"] for r in expected]
  for row, ref in zip(rows, expected):
    assert row.keys() == ref.keys()
    for key, value in ref.items():
      np.testing.assert_allclose(np.asarray(row[key], float), np.asarray(value, float), rtol=1e-4, atol=1e-6,
                                 err_msg=key)


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_two_devices_trains_and_resume_after_a_sigkill(tiny_data_dir,
                                                                                                  tmp_path):
  one = tmp_path / "one"
  subprocess.run([sys.executable, "-m", "cnn_val.main", *_flags(one, tiny_data_dir, 2)], cwd=REPO, env=ENV,
                 check=True, capture_output=True)
  full = tmp_path / "full"
  proc = _two_processes(full, tiny_data_dir, preflight=True)  # process 0 runs the pre-flight steps alone
  out = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out[-3000:]
  _assert_close(rundir.read_metrics(str(full)), rundir.read_metrics(str(one)))
  assert "test_accuracy" in rundir.read_metrics(str(full))[-1]
  for name in ("audit.json", "preflight.json", "timing.json"):  # process 0's
    assert os.path.exists(full / name), name

  killed = tmp_path / "killed"
  # The survivor of a SIGKILL waits in a collective for its dead peer until the launcher's SIGKILL: 2 s here.
  proc = _two_processes(killed, tiny_data_dir, stop_grace_s=2)
  deadline = time.time() + 300
  checkpoint = killed / "checkpoints" / "latest"
  while not (checkpoint.is_dir() and any(d.isdigit() for d in os.listdir(checkpoint))):  # epoch 1 checkpointed
    assert time.time() < deadline and proc.poll() is None, "epoch 1 never finished"
    time.sleep(0.2)
  with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
    workers = [int(p) for p in f.read().split()]
  os.kill(workers[1], signal.SIGKILL)  # process 1 of the run
  proc.communicate(timeout=120)
  assert proc.returncode != 0
  assert len(rundir.read_metrics(str(killed))) < 2
  again = _two_processes(killed, tiny_data_dir)
  out = again.communicate(timeout=600)[0]
  assert again.returncode == 0, out[-3000:]
  assert "Resuming from the checkpoint" in out
  # The metrics of the uninterrupted run exactly (pre-flight checks, which it ran, change no training).
  assert rundir.read_metrics(str(killed)) == rundir.read_metrics(str(full))


def test_a_coordinator_without_a_process_count_or_id_is_refused_before_anything_starts():
  from cnn_val import parallel
  with pytest.raises(ValueError, match="needs --num_processes >= 1 and --process_id in"):
    parallel.initialize_distributed("localhost:1234", num_processes=2, process_id=-1)
  with pytest.raises(ValueError, match="got 2 and 2"):
    parallel.initialize_distributed("localhost:1234", num_processes=2, process_id=2)

"""SIGTERM and SIGINT stop training at a step boundary with a message saying how to resume (exit 143/130, no
traceback), and the same command then ends with the metrics of an uninterrupted run."""

import signal
import subprocess

import pytest

from cnn_val import rundir
from tests.test_train import REPO, _main_command, cached_env, logged_step

STEPS_PER_EPOCH = 1080 // 16


def _interrupt(command, signum, at_step, env=None):
  proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if logged_step(line) >= at_step:
      proc.send_signal(signum)
      break
  lines.extend(proc.stderr)
  proc.wait()
  return proc.returncode, "".join(lines)


@pytest.mark.slow
def test_sigterm_stops_at_a_step_and_the_same_command_resumes_to_identical_metrics(tiny_data_dir, tmp_path):
  full, stopped = tmp_path / "full", tmp_path / "stopped"
  env = cached_env(tmp_path)
  subprocess.run(_main_command(full, tiny_data_dir, 2), cwd=REPO, check=True, capture_output=True, env=env)
  rc, err = _interrupt(_main_command(stopped, tiny_data_dir, 2), signal.SIGTERM, STEPS_PER_EPOCH + 5, env)
  assert rc == 143 and "Traceback" not in err
  assert "Interrupted by SIGTERM at step" in err and f"resume from its checkpoint at step {STEPS_PER_EPOCH}" in err
  assert [r["epoch"] for r in rundir.read_metrics(str(stopped))] == [1]
  subprocess.run(_main_command(stopped, tiny_data_dir, 2), cwd=REPO, check=True, capture_output=True, env=env)
  assert rundir.read_metrics(str(stopped)) == rundir.read_metrics(str(full))


def test_sigint_before_the_first_checkpoint_says_so(tiny_data_dir, tmp_path):
  rc, err = _interrupt(_main_command(tmp_path, tiny_data_dir, 2), signal.SIGINT, 5)
  assert rc == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err
  assert "Interrupted by SIGINT at step" in err and "to resume from the start" in err

"""Reliability of the run directory and of the command line (issue 11's fast cases): one training process per
run directory, a run that never trained can be reconfigured, and a user's mistake is one clear message."""

import os
import signal
import subprocess
import sys

import pytest

from cnn_val import rundir, train
from cnn_val.configs import default

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_second_process_on_a_live_run_directory_is_refused_naming_the_first(tiny_config, tmp_path):
  workdir = str(tmp_path)
  with rundir.run_lock(workdir):  # another fd: flock refuses it as it would another process
    with pytest.raises(rundir.RunLockedError, match=rf"is being trained by pid {os.getpid()} on .*Wait for it"):
      train.train_and_evaluate(tiny_config, workdir)
  assert not os.path.exists(os.path.join(workdir, rundir.CONFIG_FILE))  # refused before writing anything


def test_a_lock_left_by_a_killed_process_does_not_block_the_resume(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from cnn_val import rundir\n"
       "with rundir.run_lock(sys.argv[1]):\n  print('locked', flush=True); time.sleep(60)", str(tmp_path)],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(rundir.RunLockedError, match=f"pid {holder.pid}"):
    with rundir.run_lock(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with rundir.run_lock(str(tmp_path)):  # the kernel released the dead process's flock
    pass


def test_a_run_that_never_trained_takes_a_new_config_and_drops_its_data_files(tmp_path):
  workdir = str(tmp_path)
  config = default.get_config()
  rundir.write_or_check_config(workdir, config)  # e.g. then the data failed to load: nothing trained
  rundir.write_json(workdir, rundir.AUDIT_FILE, {"stale": True})
  config.data.image_size = 28
  rundir.write_or_check_config(workdir, config)
  assert rundir.read_json(workdir, rundir.CONFIG_FILE)["data"]["image_size"] == 28
  assert not os.path.exists(os.path.join(workdir, rundir.AUDIT_FILE))
  with open(os.path.join(workdir, rundir.METRICS_FILE), "w") as f:  # one epoch evaluated: now it is a run
    f.write('{"epoch": 1, "step": 10, "val_accuracy": 0.5}\n')
  config.data.image_size = 32
  with pytest.raises(ValueError, match=r"different config \(data.image_size: 28 -> 32\)"):
    rundir.write_or_check_config(workdir, config)


def _cli(*args, module="cnn_val.main"):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("flag,message", [
    ("--config.model.dropuot_rate=0.3",
     "Error: --config.model.dropuot_rate: the config has no field 'dropuot_rate'; did you mean 'dropout_rate'?"),
    ("--config.model.dropout_rate=abc",
     "Error: flag --config.model.dropout_rate=abc: could not convert string to float: 'abc'."),
    ("--config.optim.learning_rate=inf", "Error: config.optim.learning_rate=inf: expected a finite number > 0")])
def test_a_users_mistake_is_one_message_exit_2_and_no_traceback(tmp_path, flag, message):
  result = _cli("--config=configs/default.py", f"--workdir={tmp_path}/run", flag)
  assert result.returncode == 2 and message in result.stderr
  assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "run" / rundir.CONFIG_FILE)


def test_a_missing_config_file_is_named(tmp_path):
  result = _cli("--config=configs/no_such_config.py", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "--config could not be loaded (configs/no_such_config.py: [Errno 2] No such file" in result.stderr


@pytest.mark.parametrize("module", ["cnn_val.main", "cnn_val.doctor"])
def test_help_exits_0(module):
  result = _cli("--help", module=module)
  assert result.returncode == 0 and "--workdir" in result.stdout


def test_an_unreadable_config_json_is_rewritten_only_if_nothing_trained(tmp_path):
  workdir = str(tmp_path)
  (tmp_path / rundir.CONFIG_FILE).write_text("")  # a full disk at start, before atomic writes
  rundir.write_or_check_config(workdir, default.get_config())
  assert rundir.read_json(workdir, rundir.CONFIG_FILE)["seed"] == 0
  (tmp_path / rundir.METRICS_FILE).write_text('{"epoch": 1, "step": 10, "val_accuracy": 0.5}\n')
  (tmp_path / rundir.CONFIG_FILE).write_text('{"seed": 0, "num_ep')
  with pytest.raises(ValueError, match="config.json is not valid JSON"):
    rundir.write_or_check_config(workdir, default.get_config())

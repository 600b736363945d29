"""The command line: flags only, a locked config whose misspelt override fails with the field's name."""

import os
import subprocess
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return subprocess.run([sys.executable, "-m", "cnn_val.main", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_unknown_override_fails_with_the_field_name(tmp_path):
  result = _main("--config=configs/default.py", f"--workdir={tmp_path}", "--config.model.dropuot_rate=0.3")
  assert result.returncode != 0
  assert "dropuot_rate" in result.stderr
  assert not os.listdir(tmp_path)  # nothing written


def test_bad_value_fails_with_field_expected_and_fix(tmp_path):
  result = _main("--config=configs/default.py", f"--workdir={tmp_path}", "--config.optim.schedule=step")
  assert result.returncode != 0
  assert "config.optim.schedule='step': expected one of" in result.stderr


def test_workdir_is_required():
  result = _main("--config=configs/default.py")
  assert result.returncode != 0 and "workdir" in result.stderr


def test_tensorflow_is_told_to_keep_off_the_gpus_when_cnn_val_imports_it(monkeypatch):
  # An entry point only asks; TensorFlow is imported (seconds) where cnn_val needs it, and then hides the GPUs.
  code = ("import sys; from cnn_val import cli; cli.keep_tensorflow_off_accelerators(); "
          "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "False"
  from cnn_val import cli  # pylint: disable=import-outside-toplevel
  hidden = []
  config = types.SimpleNamespace(set_visible_devices=lambda devices, kind: hidden.append((devices, kind)))
  fake = types.SimpleNamespace(config=config)
  monkeypatch.setitem(sys.modules, "tensorflow", fake)
  monkeypatch.setattr(cli, "_tensorflow_off_accelerators", False)
  monkeypatch.setattr(cli, "machine_may_have_gpus", lambda: True)
  assert cli.tensorflow() is fake and not hidden  # a library user's TensorFlow is left alone
  cli.keep_tensorflow_off_accelerators()  # already imported: told at once
  assert hidden == [([], "GPU")]
  assert cli.tensorflow() is fake and hidden == [([], "GPU")] * 2
  monkeypatch.setattr(cli, "machine_may_have_gpus", lambda: False)
  assert cli.tensorflow() is fake and len(hidden) == 2  # no GPU: nothing to hide
  monkeypatch.undo()
  monkeypatch.setattr(cli.sys, "platform", "darwin")
  assert cli.machine_may_have_gpus()  # elsewhere it cannot tell: TensorFlow is told to keep off the GPUs
  monkeypatch.setattr(cli.sys, "platform", "linux")
  monkeypatch.setattr(cli.os.path, "exists", lambda p: p == "/dev/nvidiactl")
  assert cli.machine_may_have_gpus()
  monkeypatch.setattr(cli.os.path, "exists", lambda p: False)
  assert not cli.machine_may_have_gpus()


def test_a_run_on_a_prepared_dataset_does_not_import_tensorflow(tiny_config, tmp_path):
  # TensorFlow's import is 6-10 s of every process's start on 2 cores: a run reads the dataset's cached arrays
  # and writes TensorBoard's files without it (doctor and pre-flight included).
  from cnn_val.data import sources  # pylint: disable=import-outside-toplevel
  sources.load_splits(tiny_config.data)  # the cache exists (the dataset's first reader writes it)
  code = ("import atexit, runpy, sys; atexit.register(lambda: print('MODULES', *sorted(sys.modules))); "
          "runpy.run_module('cnn_val.main', run_name='__main__', alter_sys=True)")
  result = subprocess.run(
      [sys.executable, "-c", code, "--config=configs/default.py", f"--workdir={tmp_path}",
       f"--config.data.data_dir={tiny_config.data.data_dir}", "--config.data.download=False",
       "--config.num_devices=1", "--config.num_epochs=1", "--config.batch_size=32", "--config.preflight=True",
       "--config.doctor=True"], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  [line] = [line for line in result.stdout.splitlines() if line.startswith("MODULES ")]
  imported = set(line.split()[1:])
  assert {"cnn_val.training_run", "cnn_val.doctor.report", "cleanlab"} <= imported  # the whole run and its doctor
  assert "tensorflow" not in imported and "keras" not in imported
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path))
  assert os.path.exists(tmp_path / "report.md")

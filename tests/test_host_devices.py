"""Several host CPU devices: how many `config.cpu_devices` creates, and steps that never deadlock on them.

Each check that needs a fresh JAX (its device count is fixed by the first operation) runs in a subprocess
without the suite's forced XLA_FLAGS.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from cnn_val import models, parallel
from cnn_val.configs import default, fashion_mnist_bn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, *args, timeout=300):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("cpus, batch, has_stats, micro, expected", [
    (2, 128, True, 0, 2),    # BatchNorm, 64 per device: measured 1.17x
    (2, 256, True, 0, 2),    # 128 per device: 1.36x
    (2, 64, True, 0, 1),     # 32 per device: 1.0x, not worth a second device
    (2, 256, False, 0, 1),   # micro-batched models: 0.8-0.9x on 2 devices
    (2, 256, True, 32, 1),   # an explicit micro-batch splits the BatchNorm model too
    (1, 256, True, 0, 1),
    (3, 128, True, 0, 2),    # the largest count that divides the batch
    (4, 256, True, 0, 4),
    (8, 96, True, 0, 1),     # 96 = 6 x 16 or 4 x 24 or 3 x 32: under 64 per device on any divisor > 1
    (8, 256, True, 0, 4),    # 8 x 32 is too small; 4 x 64 is not
])
def test_auto_cpu_devices(cpus, batch, has_stats, micro, expected):
  assert parallel.auto_cpu_devices(cpus, batch, has_batch_stats=has_stats, micro_batch_size=micro) == expected


@pytest.mark.parametrize("make, overrides", [
    (default.get_config, {"name": "SeedCNN"}),
    (default.get_config, {}),  # SeedCNNDropout
    (fashion_mnist_bn.get_config, {}),
    (fashion_mnist_bn.get_config, {"batchnorm": False}),
    (default.get_config, {"name": "ResNet", "depth": 8, "widths": (4, 8, 8)}),
])
def test_has_batch_statistics_read_from_the_config_matches_the_model(make, overrides):
  model_config = make().model
  model_config.update(overrides)
  variables = jax.eval_shape(lambda: models.create_model(model_config, 10).init(
      jax.random.key(0), jax.numpy.zeros((1, 28, 28, 1)), train=False))
  assert models.has_batch_statistics(model_config) == ("batch_stats" in variables)


def test_bad_cpu_devices_is_named():
  config = default.get_config()
  config.cpu_devices = -1
  with pytest.raises(ValueError, match=r"config.cpu_devices=-1: expected 0 \(auto\)"):
    parallel.use_cpu_devices(config)


def test_use_cpu_devices_in_a_fresh_process():
  result = _python("""
      import json, os
      import jax
      from cnn_val import parallel
      from cnn_val.configs import default
      config = default.get_config()
      config.cpu_devices = 3
      out = {"set": parallel.use_cpu_devices(config), "devices": len(jax.devices())}
      config.cpu_devices = 2  # JAX has started: an explicit count that differs is an error
      try:
        parallel.use_cpu_devices(config)
      except ValueError as e:
        out["error"] = str(e)
      config.cpu_devices = 3
      out["same"] = parallel.use_cpu_devices(config)
      config.cpu_devices = 0
      out["auto_after_start"] = parallel.use_cpu_devices(config)
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
      out["auto_with_flag"] = parallel.use_cpu_devices(config)
      print(json.dumps(out))
  """)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["set"] == 3 and out["devices"] == 3
  assert "config.cpu_devices=2, but JAX already started in this process with 3 CPU device(s)" in out["error"]
  assert out["same"] == 3  # the count JAX has: nothing to change
  assert out["auto_after_start"] is None and out["auto_with_flag"] is None


def test_thousands_of_steps_on_two_cpu_devices_do_not_deadlock():
  """Without `parallel.pmap_step`'s wait for each step, this aborted within 3,000 steps in XLA's CPU
  all-reduce ("Expected 2 threads to join the rendezvous"), 2 runs of 2, on a 2-core machine."""
  result = _python("""
      import sys
      import jax
      jax.config.update("jax_num_cpu_devices", 2)
      from benchmarks import common
      from cnn_val.configs import seed_ex1
      common.cnn_val_runner(seed_ex1.get_config(), 32, 2)(3000)
      print("done")
  """, timeout=240)
  assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


def test_main_creates_the_configured_cpu_devices(tmp_path, tiny_data_dir):
  result = subprocess.run(
      [sys.executable, "-m", "cnn_val.main", "--config=configs/default.py", f"--workdir={tmp_path}",
       f"--config.data.data_dir={tiny_data_dir}", "--config.data.download=False", "--config.num_epochs=1",
       "--config.cpu_devices=2", "--config.eval_batch_size=64", "--config.preflight=False",
       "--config.doctor=False"],
      cwd=REPO, env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2 cpu device(s) (config.cpu_devices -> 2 CPU)" in result.stderr
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["epoch"] == 1 and "test_accuracy" in rows[-1]


def test_a_run_from_before_cpu_devices_existed_still_resumes(tmp_path):
  """Device layout changes results only to float round-off, so `cpu_devices` (like `num_devices`) may
  differ on resume; a config.json written before the field existed lacks it."""
  from cnn_val import rundir
  config = default.get_config()
  old = rundir.config_to_dict(config)
  del old["cpu_devices"]
  (tmp_path / rundir.CONFIG_FILE).write_text(json.dumps(old))
  (tmp_path / rundir.METRICS_FILE).write_text('{"epoch": 1, "step": 100, "val_accuracy": 0.8}\n')  # it trained
  config.cpu_devices = 2
  rundir.write_or_check_config(str(tmp_path), config)  # no error
  config.seed = 1
  with pytest.raises(ValueError, match=r"different config \(seed: 0 -> 1\)"):
    rundir.write_or_check_config(str(tmp_path), config)

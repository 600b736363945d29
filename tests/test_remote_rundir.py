"""Run directories at a URL (gs://bucket/run) through etils.epath, tested offline.

`fake_gcs` serves gs:// from a local folder: epath's file operations (which rundir and orbax use) are
redirected there with `etils.epath.testing.mock_epath`, and so are the three things that reach Google Cloud
Storage without epath: tensorstore's GCS driver (orbax's arrays), orbax's bucket-layout query and TensorFlow's
own GCS file system (TensorBoard's event files). Everything else runs as it would against a bucket, with paths
that stay `gs://...` strings; a stray local path (a URL mangled into `./gs:/...`) would land in the test's
working directory, which must stay empty.
"""

import json
import os
import shutil
from unittest import mock

from etils.epath import gpath
from etils.epath import testing as epath_testing
import numpy as np
from orbax.checkpoint._src.path import gcs_utils
from orbax.checkpoint._src.serialization import tensorstore_utils
import pytest

from cnn_val import ablate, doctor, evaluate, rundir, train
from cnn_val.doctor import experiments

URL = "gs://bucket/runs/tiny"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """A local folder standing in for gs:// (returns it); the working directory is an empty folder."""
  root = str(tmp_path / "gcs")
  os.makedirs(root)

  def local(p):
    p = os.fspath(p)
    return root + p[len("gs:/"):] if p.startswith("gs://") else p

  def url(p):
    p = os.fspath(p)
    return "gs:/" + p[len(root):] if p.startswith(root) else p

  def one(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  def two(original, path, dst, *args, **kwargs):
    return original(local(path), local(dst), *args, **kwargs)

  def glob(original, pattern):
    return [url(p) for p in original(local(pattern))]

  def walk(original, top, **kwargs):
    for folder, dirs, files in original(local(top), **kwargs):
      yield url(folder), dirs, files

  fns = {name: one for name in ("exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rmtree",
                                "stat")}
  fns.update(copy=two, rename=two, replace=two, glob=glob, walk=walk)
  build_kvstore_tspec = tensorstore_utils.build_kvstore_tspec
  tensorboard_writer = rundir.tensorboard_writer
  # With TensorFlow installed epath serves gs:// through tf.io.gfile, which mock_epath does not replace.
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  monkeypatch.setattr(tensorstore_utils, "build_kvstore_tspec",
                      lambda directory, *a, **k: build_kvstore_tspec(local(directory), *a, **k))
  monkeypatch.setattr(rundir, "tensorboard_writer", lambda workdir: tensorboard_writer(local(workdir)))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with epath_testing.mock_epath(**fns):
    yield root
  assert not os.listdir(cwd), f"files written outside the URL: {os.listdir(cwd)}"


@pytest.mark.slow
def test_a_run_at_a_url_trains_resumes_and_is_diagnosed(fake_gcs, tiny_config):
  tiny_config.doctor = True  # the report and its plots are written to the URL too
  row = train.train_and_evaluate(tiny_config, URL)
  folder = os.path.join(fake_gcs, "bucket", "runs", "tiny")
  files = set(os.listdir(folder))
  assert {rundir.CONFIG_FILE, rundir.METRICS_FILE, rundir.AUDIT_FILE, rundir.TIMING_FILE, "checkpoints",
          rundir.TRAIN_PREDICTIONS_FILE, "diagnosis.json", "report.md", "plots"} <= files
  assert any(name.startswith("events.out.tfevents") for name in files)
  assert not any(".tmp" in name for name in files)
  rows = rundir.read_metrics(URL)
  assert [r["epoch"] for r in rows] == [1, 2] and row == rows[-1]
  steps = [r["step"] for r in rows]
  assert sorted(map(int, os.listdir(os.path.join(folder, "checkpoints", "latest")))) == steps

  # Killed in epoch 2: its checkpoint and metrics line gone. The same call resumes from epoch 1's checkpoint,
  # read back from the URL, and ends with the same metrics.
  for kind in ("latest", "best"):
    shutil.rmtree(os.path.join(folder, "checkpoints", kind, str(steps[1])), ignore_errors=True)
  with open(os.path.join(folder, rundir.METRICS_FILE)) as f:
    first = f.readline()
  with open(os.path.join(folder, rundir.METRICS_FILE), "w") as f:
    f.write(first)
  assert train.train_and_evaluate(tiny_config, URL) == row
  assert rundir.read_metrics(URL) == rows

  result = evaluate.evaluate_checkpoint(URL, "latest", "validation")
  np.testing.assert_allclose(result["accuracy"], rows[-1]["val_accuracy"], atol=1e-6)
  diagnosis = doctor.examine(URL)
  assert diagnosis == json.load(open(os.path.join(folder, "diagnosis.json")))
  with open(os.path.join(folder, "report.md")) as f:
    report = f.read()
  for plot in os.listdir(os.path.join(folder, "plots")):
    assert f"plots/{plot}" in report


def test_a_url_run_is_locked_on_this_machine(fake_gcs):
  with rundir.run_lock(URL):
    with pytest.raises(rundir.RunLockedError, match="is being trained by pid"):
      with rundir.run_lock(URL):
        pass
  with rundir.run_lock(URL):  # released
    pass


def test_metrics_at_a_url_are_rewritten_whole(fake_gcs):
  writer = rundir.MetricsWriter(URL)
  with mock.patch.object(rundir, "tensorboard_writer", lambda workdir: rundir._NoTensorBoard()):
    for step in (1, 2):
      writer.write({"step": step, "val_accuracy": 0.5 * step})
  assert rundir.read_metrics(URL) == [{"step": 1, "val_accuracy": 0.5}, {"step": 2, "val_accuracy": 1.0}]
  assert rundir.absolute(URL) == URL and rundir.absolute("runs/x") == os.path.abspath("runs/x")
  assert not rundir.is_local(URL) and rundir.is_local("runs/gs:x")


def test_sweeps_and_verification_at_a_url_are_refused_with_the_way_out(fake_gcs, tiny_config):
  sweep = ablate.Sweep(base=rundir.config_to_dict(tiny_config), arms=[ablate.Arm("base", {})], seeds=[0])
  with pytest.raises(ablate.SweepError, match="must be a path its workers share"):
    ablate.run_sweep(sweep, "gs://bucket/sweep")
  with pytest.raises(ValueError, match="Copy the run directory"):
    experiments.verify(URL, {"findings": [], "verdict": "healthy"})

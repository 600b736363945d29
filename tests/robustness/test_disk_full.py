"""A full disk (a small tmpfs; root only, else skipped) stops a write with an error naming the file and leaves
what was on disk: checkpoints are refused before orbax starts writing, a write that fails anyway reads the same,
and metrics.jsonl is never emptied by a rewrite. benchmarks/robustness.py runs whole runs on a full disk."""

import errno
import json
import os
import subprocess

import jax
import numpy as np
import pytest

from cnn_val import checkpoint, rundir


@pytest.fixture
def small_disk(tmp_path):
  path = tmp_path / "disk"
  path.mkdir()
  if os.geteuid() != 0:  # CI runs as root, so these run there; a developer's non-root run cannot mount one
    pytest.skip("mounting a tmpfs needs root")
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True,
                           text=True)
  assert mounted.returncode == 0, f"root could not mount a tmpfs: {mounted.stderr}"
  yield str(path)
  subprocess.run(["umount", "-l", str(path)], check=True)


def _state(n):  # random weights: a checkpoint compresses them little
  return {"w": jax.random.normal(jax.random.key(0), (n,)), "step": jax.numpy.asarray(3, jax.numpy.int32)}


def test_a_checkpoint_that_cannot_fit_is_refused_before_writing(small_disk, monkeypatch):
  ckpts = checkpoint.Checkpoints(small_disk)
  assert checkpoint.state_bytes(_state(300_000)) == 1_200_004
  with pytest.raises(OSError, match=r"No space left on device for the checkpoint of step 1 .* needs about") as e:
    ckpts.save(1, _state(300_000), val_accuracy=0.5, best_so_far=None)
  assert e.value.errno == errno.ENOSPC and ckpts.latest_step() is None
  # Past the check (the disk filled up meanwhile), orbax's own failure reads the same.
  monkeypatch.setattr(checkpoint, "METADATA_BYTES", -(1 << 30))
  with pytest.raises(OSError, match="No space left on device while writing the checkpoint of step 1"):
    ckpts.save(1, _state(300_000), val_accuracy=0.5, best_so_far=None)
  monkeypatch.undo()
  ckpts.close()
  assert [d for _, dirs, _ in os.walk(small_disk) for d in dirs if "tmp" in d]  # the cut-short save's folders
  ckpts = checkpoint.Checkpoints(small_disk, cleanup=True)  # are removed by the next training process
  assert not [d for _, dirs, _ in os.walk(small_disk) for d in dirs if "tmp" in d]
  ckpts.save(2, _state(10), val_accuracy=0.5, best_so_far=None)  # and a small checkpoint fits
  restored = ckpts.restore_latest(_state(10))
  np.testing.assert_array_equal(restored["w"], _state(10)["w"])
  ckpts.close()


def test_run_files_name_the_file_and_keep_the_old_contents(small_disk):
  rows = [{"step": s, "epoch": s, "val_accuracy": 0.5} for s in (1, 2)]
  rundir.atomic_write(os.path.join(small_disk, rundir.METRICS_FILE), "".join(json.dumps(r) + "\n" for r in rows))
  with open(os.path.join(small_disk, "filler"), "wb") as f:  # the disk fills up
    with pytest.raises(OSError):
      f.write(b"x" * (2 << 20))
      f.flush()
  with pytest.raises(OSError, match=r"No space left on device while writing .*/config\.json"):
    rundir.write_json(small_disk, rundir.CONFIG_FILE, {"big": "x" * (1 << 20)})
  assert not os.path.exists(os.path.join(small_disk, rundir.CONFIG_FILE))
  assert sorted(os.listdir(small_disk)) == ["filler", rundir.METRICS_FILE]  # no temporary file left
  with pytest.raises(OSError, match="while writing .*metrics.jsonl"):  # a resume's rewrite on a full disk
    rundir.atomic_write(os.path.join(small_disk, rundir.METRICS_FILE), "x" * (1 << 20))
  assert rundir.read_metrics(small_disk) == rows  # not emptied

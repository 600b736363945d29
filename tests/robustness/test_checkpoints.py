"""Checkpoints are checked on restore: a corrupted latest checkpoint is never restored silently; the run falls
back to the one before it and ends with the metrics of an untouched run; with none intact, a clear error."""

import glob
import os

import pytest

from cnn_val import checkpoint, rundir, train


def _flip_bytes(folder: str, count: int = 64) -> str:
  """Flips `count` bytes in the middle of the largest data file under `folder` (as a bad disk would)."""
  files = [f for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(f)]
  target = max(files, key=os.path.getsize)
  with open(target, "r+b") as f:
    data = bytearray(f.read())
    middle = len(data) // 2
    for i in range(middle, middle + count):
      data[i] ^= 0xFF
    f.seek(0)
    f.write(data)
  return target


def _steps(workdir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(workdir, "checkpoints", "latest", "[0-9]*")),
                key=lambda p: int(p.rsplit("/", 1)[-1]))


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_config, tmp_path, caplog):
  full, damaged = str(tmp_path / "full"), str(tmp_path / "damaged")
  train.train_and_evaluate(tiny_config, full)
  train.train_and_evaluate(tiny_config, damaged)
  first, last = _steps(damaged)  # KEEP_LATEST = 2: epoch 1's checkpoint is still there
  _flip_bytes(last)
  train.train_and_evaluate(tiny_config, damaged)  # the same command again
  assert "is corrupt, trying the one before it" in caplog.text
  assert f"Resuming from the intact checkpoint at step {first.rsplit('/', 1)[-1]}" in caplog.text
  assert rundir.read_metrics(damaged) == rundir.read_metrics(full)  # epoch 2 redone, same numbers
  # The redone epoch rewrote its checkpoint: it restores intact now.
  caplog.clear()
  train.train_and_evaluate(tiny_config, damaged)
  assert "corrupt" not in caplog.text


def test_no_intact_checkpoint_is_a_clear_error(tiny_config, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config, workdir)
  for step in _steps(workdir):
    _flip_bytes(step)
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=r"No checkpoint could be restored intact: .*(holds different bytes|cannot be read).*Move "
                           r"the checkpoints folder aside"):
    train.train_and_evaluate(tiny_config, workdir)


def test_a_missing_checkpoint_file_reads_the_same_way(tiny_config, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config, workdir)
  for step in _steps(workdir):
    os.remove(os.path.join(step, "default", "_METADATA"))
  with pytest.raises(checkpoint.CorruptCheckpointError, match=r"cannot be read"):
    train.train_and_evaluate(tiny_config, workdir)


def test_a_torn_last_metrics_line_is_redone_even_when_the_checkpoint_is_ahead(tiny_config, tmp_path):
  """A kill (or full disk) mid-write of the last line of a finished run: the checkpoint is ahead of
  metrics.jsonl; the same command redoes the epoch from the checkpoint before it and writes the line again."""
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config, workdir)
  before = rundir.read_metrics(workdir)
  path = os.path.join(workdir, rundir.METRICS_FILE)
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text[:-30])
  train.train_and_evaluate(tiny_config, workdir)
  assert rundir.read_metrics(workdir) == before


def test_the_train_states_checkpoint_layout_is_what_earlier_versions_wrote():
  """Checkpoints restore into the state's pytree: a field added to TrainState (even one that is None) makes
  every checkpoint written before it unreadable. Its fields stay those of every earlier version; the moving
  average lives in a subclass of its own."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from cnn_val import steps  # pylint: disable=import-outside-toplevel
  assert [f.name for f in dataclasses.fields(steps.TrainState)] == ["step", "params", "batch_stats", "opt_state"]
  assert [f.name for f in dataclasses.fields(steps.EmaTrainState)][4:] == ["ema"]

"""The run directory's text files: `config.json` and `metrics.jsonl`, plus TensorBoard scalars.

The run directory is the only interface between training and everything after it (doctor, report, ablation),
so these formats are kept stable; see DESIGN.md. Only process 0 writes.

A run directory may be a local path or a URL that `etils.epath` serves (`gs://bucket/run`, also s3:// and
az://): every run file is read and written through `path()`, checkpoints through orbax, which takes the same
paths. Local files keep what only a local disk gives: an `fsync` before each rename, an `flock` held by the
training process, appends to metrics.jsonl. On a URL a file is whole or absent (an object store writes an
object at once), metrics.jsonl is rewritten whole at each evaluation, and the run's lock is held on this machine
only (`exclusive_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from typing import Callable

from absl import logging
from etils import epath
import jax
import numpy as np

from cnn_val import config_fields

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
AUDIT_FILE = "audit.json"
AUGMENT_CHECK_FILE = "augment_check.json"  # does each augmentation keep the labels? (cnn_val/augment_check.py)
PREFLIGHT_FILE = "preflight.json"  # pre-flight checks (cnn_val/preflight.py)
LR_FIND_FILE = "lr_find.json"  # LR range test (cnn_val/lr_find.py)
DIVERGED_FILE = "diverged.json"  # written when a run stops on a NaN/Inf loss
EARLY_STOP_FILE = "early_stopped.json"  # written when config.early_stopping_patience ended the run
TIMING_FILE = "timing.json"  # where the last training process's wall time went, by phase (train_loop.WallTime)
# Every training example's softmax outputs with the best checkpoint's weights, the final ones where the last
# evaluation is the best (the doctor's label check reads them).
TRAIN_PREDICTIONS_FILE = "train_predictions.npz"
RUN_LOCK_FILE = ".run.lock"  # held (flock) by the process training the run


def path(*parts) -> epath.Path:
  """A local path or a URL such as gs://bucket/run (`parts` joined) as an `etils.epath.Path`, which reads and
  writes both."""
  return epath.Path(*parts)


def is_local(p) -> bool:
  """Whether `p` is a path on this machine's file system (not a URL that epath serves, such as gs://)."""
  return not _URL_SCHEME.match(os.fspath(p))


_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def absolute(p) -> str:
  """`p` made absolute when it is local (a child process may start elsewhere); a URL as it is."""
  return os.path.abspath(p) if is_local(p) else os.fspath(p)


def exists(p) -> bool:
  return path(p).exists()


def read_lr_find(workdir: str, config: dict) -> tuple[dict | None, dict]:
  """(lr_find.json in `workdir` where it was measured for the recipe of `config` (a config dict), else None;
  the fields in which it differs, config_fields.lr_find_mismatch's)."""
  found = read_json(workdir, LR_FIND_FILE)
  changed = config_fields.lr_find_mismatch(found, config)
  return (None if changed else found), changed


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


class RunLockedError(ValueError):
  """The run directory is being trained by another live process."""


@contextlib.contextmanager
def exclusive_lock(path: str, refuse: Callable[[str], Exception]):
  """Holds the file `path` for this process; while another process holds it, raises `refuse(holder)` (holder:
  its pid, host and start time, as the file records them).

  An flock: the kernel releases it when its holder dies (even by SIGKILL), so a lock left by a dead process
  never blocks the resume. An object store (gs://) has no such lock: for a URL the lock file lives in this
  machine's temporary directory, named after the URL, so it keeps out a second process on this machine only
  (on a cluster, one job per run directory is the launcher's part: the sweep executors give each run its own).
  """
  if not is_local(path):
    digest = hashlib.sha256(os.fspath(path).encode()).hexdigest()[:20]
    path = os.path.join(tempfile.gettempdir(), "cnn_val-locks", f"{digest}.lock")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      raise refuse(f.read().strip() or "another process") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    f.flush()
    try:
      yield
    finally:
      f.seek(0)
      f.truncate()  # the lock itself goes with the file descriptor


def run_lock(workdir: str):
  """Holds RUN_LOCK_FILE in `workdir` for one training process; a second one is refused, naming the first."""
  return exclusive_lock(os.path.join(workdir, RUN_LOCK_FILE), lambda holder: RunLockedError(
      f"--workdir={workdir} is being trained by {holder}: a second process would write every epoch twice. "
      f"Wait for it to finish (or stop it), then run the same command again to resume; or use a new --workdir."))


def never_trained(workdir: str) -> bool:
  """No evaluation, no divergence and no checkpoint: the run's config may still be changed."""
  if read_metrics(workdir) or exists(os.path.join(workdir, DIVERGED_FILE)):
    return False
  checkpoints = path(workdir) / "checkpoints"
  return not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.glob("*/*")))


# Files derived from a run's data; a reconfigured run that never trained recomputes them.
_DERIVED_FROM_DATA = (AUDIT_FILE, AUGMENT_CHECK_FILE, PREFLIGHT_FILE, LR_FIND_FILE)


def write_or_check_config(workdir: str, config) -> None:
  """Writes config.json for a new run; for an existing run, refuses a config that would change its results,
  unless the run never trained (e.g. it stopped at a data error): that one is reconfigured."""
  file = os.path.join(workdir, CONFIG_FILE)
  new = config_to_dict(config)
  try:
    old = read_json(workdir, CONFIG_FILE)
  except ValueError:
    if not never_trained(workdir):
      raise
    logging.warning("%s is unreadable (cut short before anything trained); writing it again.", file)
    old = None
  if old is not None and old != new and never_trained(workdir):
    logging.info("%s held a run that never trained; it takes the new config.", workdir)
    for name in _DERIVED_FROM_DATA:
      if exists(os.path.join(workdir, name)):
        path(workdir, name).unlink()
    old = None
  if old is not None:
    changed = config_fields.config_changes(old, new)
    if changed:
      details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
      raise ValueError(
          f"--workdir={workdir} already holds a run with a different config ({details}). Resuming it would "
          f"mix two experiments: use a new --workdir, or run again with the config in {file}.")
  write_json(workdir, CONFIG_FILE, new)


def _json_safe(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None  # JSON has no NaN/Inf; null marks a non-finite number
  return value


def read_metrics(workdir: str) -> list[dict]:
  """metrics.jsonl's rows. A torn last line (a kill or a full disk mid-write) is dropped with a warning: its
  evaluation is redone on resume. A bad line before the last names the file and line."""
  file = os.path.join(workdir, METRICS_FILE)
  try:
    lines = [line for line in path(file).read_text().splitlines() if line.strip()]
  except FileNotFoundError:
    return []
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        logging.warning("Dropped the torn last line of %s (%s); its evaluation is redone on resume.", file, e)
        break
      raise ValueError(f"{file}, line {i + 1}, is not valid JSON ({e}). Remove that line (and the ones after "
                       f"it) and run the same command again to redo those evaluations.") from None
  return rows


def truncate_metrics(workdir: str, last_step: int, rows: list[dict] | None = None) -> list[dict]:
  """Drops lines written after the checkpoint a run resumes from (they will be written again) and returns the
  rows kept; `rows`: metrics.jsonl as already read."""
  rows = [r for r in (read_metrics(workdir) if rows is None else rows) if r["step"] <= last_step]
  if jax.process_index() == 0:  # atomically: a full disk here must not empty the file
    atomic_write(os.path.join(workdir, METRICS_FILE), "".join(json.dumps(r) + "\n" for r in rows))
  return rows


def hparams(config_dict: dict) -> dict:
  """A config as TensorBoard HParams: dotted fields with bool, int, float or str values (tuples and lists as
  their text; empty values left out), so runs of a sweep line up by what differs between them."""
  out = {}
  for field, value in config_fields.flatten(config_dict).items():
    if isinstance(value, (list, tuple)):
      value = str(list(value))
    if isinstance(value, (bool, int, float, str)) and value != "" and not (
        isinstance(value, float) and not math.isfinite(value)):
      out[field] = value
  return out


class _NoTensorBoard:
  """Stands in for the TensorBoard writer where it cannot write: metrics.jsonl still holds every evaluation."""

  def __getattr__(self, name):
    return lambda *args, **kwargs: None


def tensorboard_writer(workdir: str):
  """A TensorBoard writer on `workdir` with clu's `MetricWriter` methods. A local folder gets
  `summaries.EventWriter` (the same summaries without TensorFlow, whose import would cost each run 6-10 s of
  its start on a 2-core CPU); a remote one (gs://...) clu's `metric_writers.SummaryWriter`, whose TensorFlow
  file system writes object stores. Where that is not installed, a writer that writes nothing, with one
  warning."""
  try:
    if is_local(workdir):
      from cnn_val import summaries  # pylint: disable=import-outside-toplevel  (TensorBoard's protos)
      return summaries.EventWriter(workdir)
    from cnn_val import cli  # pylint: disable=import-outside-toplevel
    cli.tensorflow()  # clu's writer imports it: first, with the GPUs hidden from it where an entry point asked
    from clu import metric_writers  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    global _WARNED_NO_TENSORBOARD
    if not _WARNED_NO_TENSORBOARD:
      logging.warning("No TensorBoard summaries in %s: %s (pip install %s). metrics.jsonl holds every evaluation.",
                      workdir, e, "tensorboard" if is_local(workdir) else
                      "tensorflow-cpu clu: a remote folder is written through TensorFlow's file systems")
      _WARNED_NO_TENSORBOARD = True
    return _NoTensorBoard()
  return metric_writers.SummaryWriter(workdir)


_WARNED_NO_TENSORBOARD = False


class MetricsWriter:
  """Appends one JSON object per evaluation to metrics.jsonl and mirrors the scalars to TensorBoard
  (`tensorboard_writer`); `hparams` adds the run's config to
  TensorBoard's HParams view, where the runs of a sweep (`tensorboard --logdir SWEEP/runs`) line up."""

  def __init__(self, workdir: str):
    self._path, self._workdir = os.path.join(workdir, METRICS_FILE), workdir
    self._active = jax.process_index() == 0
    self._tb = None

  def _open(self):
    if self._tb is None:  # created on first use: a finished run started again writes no empty event file
      self._tb = tensorboard_writer(self._workdir)

  def hparams(self, config_dict: dict) -> None:
    """The run's config in TensorBoard's HParams view (written once, when the run starts)."""
    if self._active:
      self._open()
      self._tb.write_hparams(hparams(config_dict))

  def scalars(self, step: int, values: dict) -> None:
    """Per-step scalars (TensorBoard only; metrics.jsonl holds one line per evaluation)."""
    if self._active:
      self._open()
      self._tb.write_scalars(step, values)

  def write(self, row: dict) -> None:
    if not self._active:
      return
    self._open()
    row = _nan_to_none(row)
    line = json.dumps(row) + "\n"
    if not is_local(self._path):  # an object store cannot append: the file is rewritten whole, atomically
      atomic_write(self._path, "".join(json.dumps(r) + "\n" for r in read_metrics(self._workdir)) + line)
    else:
      try:  # appended; a line torn by a kill or a full disk is dropped on reading (read_metrics)
        with open(self._path, "a") as f:
          f.write(line)
          f.flush()
          os.fsync(f.fileno())
      except OSError as e:
        raise _naming(e, self._path) from None
    self._tb.write_scalars(row["step"], {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))
                                         and not isinstance(v, bool)})
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _naming(error: OSError, path: str) -> OSError:
  """The same OS error with the file it hit in its message (a full disk's ENOSPC names none)."""
  return OSError(error.errno, f"{error.strerror or error} while writing {path}")


def atomically(file: str, mode: str, write: Callable) -> None:
  """`write(f)` into a temporary file beside `file`, flushed to disk, then renamed over `file`: a reader, a kill
  or a full disk sees the old file or the new one, never half of one. An OS error (a full disk) names the file
  and leaves the old one. `file` may be a URL (epath); an object store has no fsync (its objects appear whole)."""
  target = path(file)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = path(f"{file}.tmp{os.getpid()}")
  try:
    with tmp.open(mode) as f:
      write(f)
      f.flush()
      if is_local(file):
        os.fsync(f.fileno())
    tmp.replace(target)
  except OSError as e:
    with contextlib.suppress(OSError):
      tmp.unlink()
    raise _naming(e, file) from None


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (`atomically`)."""
  atomically(path, "w", lambda f: f.write(text))


def write_npz(workdir: str, name: str, **arrays) -> str:
  """Writes numpy arrays as `workdir/name` (process 0 only, atomically; no pickle: numeric and text arrays only)
  and returns the path."""
  file = os.path.join(workdir, name)
  if jax.process_index() == 0:
    atomically(file, "wb", lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))
  return file


def write_json(workdir: str, name: str, obj) -> str:
  """Writes `obj` as `workdir/name` (process 0 only, atomically; NaN/Inf as null) and returns the path."""
  file = os.path.join(workdir, name)
  if jax.process_index() == 0:
    atomic_write(file, json.dumps(_nan_to_none(obj), indent=1))
  return file


def remove(workdir: str, name: str) -> None:
  """Removes `workdir/name` (process 0 only); nothing where it does not exist."""
  if jax.process_index() == 0:
    path(workdir, name).unlink(missing_ok=True)


def read_json(workdir: str, name: str):
  """`workdir/name` parsed, or None when the file does not exist."""
  file = os.path.join(workdir, name)
  try:
    text = path(file).read_text()
  except FileNotFoundError:
    return None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON ({e}); it was probably cut short by a kill or a full disk. "
                     f"Remove it (or restore it) and run the same command again.") from None


def _nan_to_none(obj):
  if isinstance(obj, dict):
    return {k: _nan_to_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_nan_to_none(v) for v in obj]
  return _json_safe(obj)

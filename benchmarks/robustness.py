"""The robustness suite: what users and machines do wrong, thrown at cnn_val, each outcome classified.

    .venv/bin/python -m benchmarks.robustness [--only=SUBSTRING] [--kills=20] [--jobs=2]

Every case runs the real command lines (`cnn_val.main`, `cnn_val.doctor`, `launch/ablate.py`) in fresh
processes on a tiny generated Fashion-MNIST (1,200 training images), or damages a finished run directory and
runs the same command again. Outcomes:

  clear error   refused with a message naming what to change: exit code != 0, an `Error:`/message line, no
                Python traceback
  survived      the command did what it should despite the fault (resumed, fell back, refused a second
                process) and nothing was lost (the check named in the case holds)
  silent wrong  exit 0 (or a result) where the input was wrong, or a check that fails without a message
  crash         a Python traceback
  data lost     a finished run's files no longer hold what they held
  not run       the machine does not allow the case (a tmpfs for the full-disk cases needs root)

`--kills=N` adds the kill test: one 3-epoch run SIGKILLed N times at random moments (seeded), each time
restarted with the same command, must end with the metrics.jsonl of an uninterrupted run. The table (case,
outcome, seconds) and the counts per outcome are printed; README "Devices, resuming, failures" shows them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags

_ONLY = flags.DEFINE_string("only", "", "Run only the cases whose name contains this (or one of these, comma-separated).")
_KILLS = flags.DEFINE_integer("kills", 0, "SIGKILL one run this many times at random moments (0 = skip).")
_JOBS = flags.DEFINE_integer("jobs", 2, "Cases run at a time.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
OUTCOMES = ("clear error", "survived", "silent wrong", "crash", "data lost", "not run")


@dataclasses.dataclass
class Ctx:
  root: str  # a scratch folder of this case
  data_dir: str  # the tiny TFDS data_dir
  finished: str  # a finished 2-epoch run directory to copy and damage

  def base(self, workdir: str, *extra: str, epochs: int = 2) -> list[str]:
    return [PY, "-m", "cnn_val.main", "--config=configs/default.py", f"--workdir={workdir}",
            f"--config.data.data_dir={self.data_dir}", "--config.data.download=False", "--config.num_devices=1",
            f"--config.num_epochs={epochs}", "--config.batch_size=16", "--config.log_every_steps=5",
            "--config.optim.decay_steps=40", "--config.doctor=False", "--config.preflight=False", *extra]

  def copy_finished(self, name: str = "run") -> str:
    target = os.path.join(self.root, name)
    shutil.copytree(self.finished, target)
    return target


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def expect_error(result: subprocess.CompletedProcess, needle: str = "") -> tuple[str, str]:
  """A case whose input is wrong: a clear error is exit != 0, no traceback, and `needle` in the message."""
  err = result.stderr
  if "Traceback (most recent call last)" in err:
    return "crash", err.strip().splitlines()[-1][:150]
  if result.returncode == 0:
    return "silent wrong", "exit 0"
  lines = err.strip().splitlines() or [""]
  line = next((l for l in lines if l.startswith("Error:")), None) or next(
      (l for l in reversed(lines) if "rror" in l), lines[-1])
  if needle and needle not in err:
    return "silent wrong", f"exit {result.returncode} without '{needle}': {str(line)[:120]}"
  return "clear error", f"exit {result.returncode}: {str(line).strip()[:140]}"


def expect_ok(result: subprocess.CompletedProcess, check: Callable[[], bool] = lambda: True,
              note: str = "") -> tuple[str, str]:
  if "Traceback (most recent call last)" in result.stderr:
    return "crash", result.stderr.strip().splitlines()[-1][:150]
  if result.returncode != 0:
    return "silent wrong", f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1][:120]}"
  return ("survived", note) if check() else ("data lost", note or "the check failed")


def metrics(workdir: str) -> str:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read()


CASES: list[tuple[str, Callable[[Ctx], tuple[str, str]]]] = []


def case(name: str):
  def register(fn):
    CASES.append((name, fn))
    return fn
  return register


# --- Flags and config values: one clear message each, nothing written. ---
_BAD_FLAGS = {
    "misspelt field": ("--config.model.dropuot_rate=0.3", "did you mean 'dropout_rate'"),
    "misspelt group": ("--config.optimm.learning_rate=0.1", "no field 'optimm'"),
    "value of the wrong type": ("--config.num_epochs=abc", "num_epochs"),
    "dropout rate 1.5": ("--config.model.dropout_rate=1.5", "config.model.dropout_rate=1.5"),
    "negative dropout": ("--config.model.dropout_rate=-0.1", "config.model.dropout_rate"),
    "learning rate inf": ("--config.optim.learning_rate=inf", "config.optim.learning_rate=inf"),
    "learning rate nan": ("--config.optim.learning_rate=nan", "config.optim.learning_rate=nan"),
    "learning rate 0": ("--config.optim.learning_rate=0", "config.optim.learning_rate=0"),
    "negative learning rate": ("--config.optim.learning_rate=-1e-3", "config.optim.learning_rate"),
    "weight decay nan": ("--config.optim.weight_decay=nan", "config.optim.weight_decay=nan"),
    "negative weight decay": ("--config.optim.weight_decay=-1", "config.optim.weight_decay"),
    "decay rate 100": ("--config.optim.decay_rate=100", "above 1 the learning rate grows"),
    "decay rate 0": ("--config.optim.decay_rate=0", "config.optim.decay_rate"),
    "decay steps 0": ("--config.optim.decay_steps=0", "config.optim.decay_steps"),
    "unknown schedule": ("--config.optim.schedule=step", "config.optim.schedule='step'"),
    "unknown optimizer": ("--config.optim.optimizer=rmsprop", "config.optim.optimizer='rmsprop'"),
    "unknown weight decay mode": ("--config.optim.weight_decay_mode=l1", "weight_decay_mode"),
    "unknown model": ("--config.model.name=VGG", "config.model.name='VGG'"),
    "zero epochs": ("--config.num_epochs=0", "config.num_epochs=0"),
    "negative batch": ("--config.batch_size=-32", "config.batch_size=-32"),
    "batch larger than the data": ("--config.batch_size=4096", "exceeds the"),
    "eval every 0 epochs": ("--config.eval_every_epochs=0", "config.eval_every_epochs=0"),
    "log every 0 steps": ("--config.log_every_steps=0", "config.log_every_steps=0"),
    "micro batch not dividing": ("--config.micro_batch_size=5", "micro_batch_size=5"),
    "negative micro batch": ("--config.micro_batch_size=-1", "micro_batch_size"),
    "unknown dtype": ("--config.dtype=float8", "dtype"),
    "unknown conv impl": ("--config.model.conv_impl=winograd", "conv_impl"),
    "width multiplier 0": ("--config.model.width_multiplier=0", "config.model.width_multiplier=0"),
    "too many extra blocks": ("--config.model.extra_blocks=5", "extra_blocks=5"),
    "unknown kernel init": ("--config.model.kernel_init=he", "config.model.kernel_init='he'"),
    "unknown augmentation preset": ("--config.augment.preset=heavy", "config.augment.preset='heavy'"),
    "negative rotation": ("--config.augment.rotation_range=-5", "rotation_range"),
    "zoom 1.5": ("--config.augment.zoom_range=1.5", "zoom_range"),
    "unknown fill mode": ("--config.augment.fill_mode=mirror", "fill_mode"),
    "unknown class weighting": ("--config.imbalance.class_weighting=focal", "class_weighting='focal'"),
    "unknown resampling": ("--config.imbalance.resampling=smote", "resampling='smote'"),
    "beta 1": ("--config.imbalance.beta=1.0", "config.imbalance.beta=1.0"),
    "label noise 1": ("--config.data.scenario.label_noise=1.0", "label_noise=1.0"),
    "imbalance ratio 0.5": ("--config.data.scenario.imbalance_ratio=0.5", "imbalance_ratio=0.5"),
    "minority class 12": ("--config.data.scenario.minority_classes=(12,)", "minority_classes"),
    "missing class 10": ("--config.data.scenario.missing_classes=(10,)", "missing_classes"),
    "negative duplicates": ("--config.data.scenario.duplicates=-3", "duplicates"),
    "negative max examples": ("--config.data.max_train_examples=-5", "max_train_examples"),
    "too many devices": ("--config.num_devices=64", "config.num_devices=64"),
    "unknown dataset": ("--config.data.name=no_such_dataset_xyz", "no_such_dataset_xyz"),
    "negative train probe": ("--config.train_eval_examples=-1", "train_eval_examples"),
    "moving-average decay 1": ("--config.ema_decay=1.0", "config.ema_decay=1.0"),
    "moving-average decay nan": ("--config.ema_decay=nan", "config.ema_decay=nan"),
    "negative early-stopping patience": ("--config.early_stopping_patience=-1", "early_stopping_patience"),
    "negative profile steps": ("--config.profile_steps=-5", "profile_steps"),
    "negative steps per call": ("--config.steps_per_call=-2", "steps_per_call"),
    "eval batch 0": ("--config.eval_batch_size=0", "config.eval_batch_size=0"),
    "validation fraction 1.5": ("--config.data.validation_fraction=1.5", "validation_fraction"),
    "unknown label-noise kind": ("--config.data.scenario.label_noise_kind=bogus", "label_noise_kind"),
    "negative CPU devices": ("--config.cpu_devices=-1", "cpu_devices"),
}
for _name, (_flag, _needle) in _BAD_FLAGS.items():
  def _bad_flag(ctx, flag=_flag, needle=_needle):
    workdir = os.path.join(ctx.root, "run")
    outcome, note = expect_error(run(ctx.base(workdir, flag)), needle)
    path = os.path.join(workdir, "metrics.jsonl")
    if outcome == "clear error" and os.path.exists(path) and os.path.getsize(path):
      return "silent wrong", "refused, but only after training"
    return outcome, note
  case(f"config: {_name}")(_bad_flag)


@case("cli: missing config file")
def _missing_config(ctx):
  return expect_error(run([PY, "-m", "cnn_val.main", "--config=configs/nope.py", f"--workdir={ctx.root}/r"]),
                      "could not be loaded")


@case("cli: no --workdir")
def _no_workdir(ctx):
  return expect_error(run([PY, "-m", "cnn_val.main", "--config=configs/default.py"]), "workdir")


@case("cli: stray argument")
def _stray(ctx):
  return expect_error(run(ctx.base(os.path.join(ctx.root, "r"), "extra")), "Unexpected arguments")


@case("cli: --help exits 0")
def _help(ctx):
  result = run([PY, "-m", "cnn_val.main", "--help"])
  return ("survived", "exit 0") if result.returncode == 0 and "--workdir" in result.stdout else \
      ("silent wrong", f"exit {result.returncode}")


# --- Image folders. ---
def _png(path, array):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(tf.io.encode_png(np.asarray(array, np.uint8)).numpy())


def _folder(root: str, per_class: int = 12, channels: int = 1) -> str:
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for c, name in enumerate(("bar", "dot")):
      for i in range(per_class):
        image = rng.integers(0, 60, (12, 12, channels))
        image[6 if c == 0 else slice(2, 5)] = 250
        _png(os.path.join(root, split, name, f"{i}.png"), image)
  return root


def _folder_cmd(ctx, root, *extra):
  return [PY, "-m", "cnn_val.main", "--config=configs/default.py", f"--workdir={ctx.root}/run",
          "--config.data.name=image_folder", f"--config.data.root={root}", "--config.num_epochs=1",
          "--config.batch_size=8", "--config.num_devices=1", "--config.doctor=False", "--config.preflight=False",
          "--config.model.name=ConvNet", "--config.model.widths=(4,)", *extra]


def _folder_case(name, damage, needle):
  def fn(ctx):
    root = _folder(os.path.join(ctx.root, "images"))
    damage(root)
    return expect_error(run(_folder_cmd(ctx, root)), needle)
  case(f"image folder: {name}")(fn)


def _write(path, data: bytes):
  with open(path, "wb") as f:
    f.write(data)


_folder_case("empty class folder", lambda r: os.makedirs(os.path.join(r, "train", "ghost")), "holds no .png")
_folder_case("a file that is not a PNG", lambda r: _write(os.path.join(r, "train", "dot", "x.png"), b"nope"),
             "x.png cannot be read")
_folder_case("a truncated PNG", lambda r: _write(os.path.join(r, "train", "dot", "t.png"),
                                               open(os.path.join(r, "train", "dot", "0.png"), "rb").read()[:40]),
             "t.png cannot be read")
_folder_case("a dangling symlink", lambda r: os.symlink("gone.png", os.path.join(r, "train", "dot", "l.png")),
             "broken or circular symbolic link")
_folder_case("a circular symlink", lambda r: os.symlink("c.png", os.path.join(r, "train", "dot", "c.png")),
             "broken or circular symbolic link")
_folder_case("mixed sizes without image_size", lambda r: _png(os.path.join(r, "train", "bar", "big.png"),
                                                              [[[0]] * 20] * 20), "images differ in size")
_folder_case("no train folder", lambda r: shutil.rmtree(os.path.join(r, "train")), "has no train/ folder")
_folder_case("a folder that is not a split", lambda r: os.makedirs(os.path.join(r, "extra", "a")),
             "not splits")


@case("image folder: root does not exist")
def _no_root(ctx):
  return expect_error(run(_folder_cmd(ctx, os.path.join(ctx.root, "nowhere"))), "is not a directory")


@case("image folder: channels=2")
def _channels2(ctx):
  return expect_error(run(_folder_cmd(ctx, _folder(os.path.join(ctx.root, "i")), "--config.data.channels=2")),
                      "config.data.channels=2")


@case("image folder: one RGBA image among grayscale")
def _rgba(ctx):
  root = _folder(os.path.join(ctx.root, "images"))
  _png(os.path.join(root, "train", "bar", "0.png"), [[[200, 200, 200, 255]] * 12] * 12)
  result = run(_folder_cmd(ctx, root))
  config = os.path.join(ctx.root, "run", "audit.json")
  return expect_ok(result, lambda: json.load(open(config))["splits"]["train"]["channel_means"].__len__() == 1,
                   "trained on 1 channel (the majority)")


@case("image folder: fixed by image_size in the same workdir")
def _reconfigure(ctx):
  root = _folder(os.path.join(ctx.root, "images"))
  _png(os.path.join(root, "train", "bar", "big.png"), [[[0]] * 20] * 20)
  first = run(_folder_cmd(ctx, root))
  if first.returncode == 0:
    return "silent wrong", "mixed sizes accepted"
  return expect_ok(run(_folder_cmd(ctx, root, "--config.data.image_size=12")),
                   lambda: os.path.exists(os.path.join(ctx.root, "run", "metrics.jsonl")),
                   "the suggested fix is accepted in the same workdir")


# --- The run directory: damage a finished run, run the same command again. ---
def _rerun_finished(ctx, damage, check, note):
  workdir = ctx.copy_finished()
  before = metrics(workdir)
  damage(workdir)
  result = run(ctx.base(workdir))
  return expect_ok(result, lambda: check(workdir, before), note)


def _same_metrics(workdir, before):
  return metrics(workdir) == before


def _damage_case(name, damage, note, check=_same_metrics):
  case(f"run directory: {name}")(lambda ctx: _rerun_finished(ctx, damage, check, note))


def _latest(workdir):
  folder = os.path.join(workdir, "checkpoints", "latest")
  return os.path.join(folder, max(os.listdir(folder), key=int))


def _flip(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  target = max(files, key=os.path.getsize)
  data = bytearray(open(target, "rb").read())
  for i in range(len(data) // 2, len(data) // 2 + 64):
    data[i] ^= 0xFF
  _write(target, bytes(data))


def _truncate_last_line(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  data = open(path).read()
  _write(path, data[:-30].encode())


_damage_case("flipped bytes in the latest checkpoint", lambda w: _flip(_latest(w)),
             "fell back to the previous checkpoint; same metrics")
_damage_case("latest checkpoint's metadata deleted", lambda w: os.remove(os.path.join(_latest(w), "default",
                                                                                       "_METADATA")),
             "fell back to the previous checkpoint; same metrics")
_damage_case("latest checkpoint folder deleted", lambda w: shutil.rmtree(_latest(w)),
             "resumed from the previous checkpoint; same metrics")
_damage_case("torn last line of metrics.jsonl", _truncate_last_line, "the epoch redone; same metrics")
_damage_case("TensorBoard files deleted", lambda w: [os.remove(os.path.join(w, f)) for f in os.listdir(w)
                                                     if f.startswith("events.out")], "nothing else changed")
_damage_case("audit.json deleted", lambda w: os.remove(os.path.join(w, "audit.json")), "audit recomputed",
             lambda w, before: metrics(w) == before and os.path.exists(os.path.join(w, "audit.json")))
_damage_case("a stale .run.lock left by a dead process",
             lambda w: _write(os.path.join(w, ".run.lock"), b"pid 999999 on nowhere"), "not blocked by it")


@case("run directory: every checkpoint corrupt")
def _all_corrupt(ctx):
  workdir = ctx.copy_finished()
  for step in os.listdir(os.path.join(workdir, "checkpoints", "latest")):
    _flip(os.path.join(workdir, "checkpoints", "latest", step))
  return expect_error(run(ctx.base(workdir)), "No checkpoint could be restored intact")


@case("run directory: empty config.json before anything trained (disk full at start)")
def _empty_config(ctx):
  workdir = os.path.join(ctx.root, "run")
  os.makedirs(workdir)
  _write(os.path.join(workdir, "config.json"), b"")
  return expect_ok(run(ctx.base(workdir)), lambda: metrics(workdir) == metrics(ctx.finished),
                   "written again, trained to the reference metrics")


@case("run directory: corrupt config.json of a trained run")
def _corrupt_config(ctx):
  workdir = ctx.copy_finished()
  _write(os.path.join(workdir, "config.json"), b'{"seed": 0, "num_ep')
  return expect_error(run(ctx.base(workdir)), "config.json is not valid JSON")


@case("run directory: corrupt line in the middle of metrics.jsonl")
def _corrupt_middle(ctx):
  workdir = ctx.copy_finished()
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  lines[0] = lines[0][:20]
  _write(os.path.join(workdir, "metrics.jsonl"), ("\n".join(lines) + "\n").encode())
  return expect_error(run(ctx.base(workdir)), "metrics.jsonl")


@case("run directory: a different config in a trained workdir")
def _different(ctx):
  return expect_error(run(ctx.base(ctx.copy_finished(), "--config.optim.learning_rate=0.01")),
                      "different config")


@case("run directory: a finished run started again")
def _finished_again(ctx):
  workdir = ctx.copy_finished()
  before = (metrics(workdir), sorted(os.listdir(workdir)))
  result = run(ctx.base(workdir))
  return expect_ok(result, lambda: (metrics(workdir), sorted(os.listdir(workdir))) == before and
                   "already finished" in result.stderr, "says it is finished; no file added")


@case("concurrency: the same command twice at once")
def _twice(ctx):
  workdir = os.path.join(ctx.root, "run")
  first = subprocess.Popen(ctx.base(workdir, epochs=2), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
  deadline = time.time() + 120
  while not os.path.exists(os.path.join(workdir, "config.json")) and time.time() < deadline:
    time.sleep(0.2)
  second = run(ctx.base(workdir, epochs=2))
  first.wait()
  epochs = [json.loads(l)["epoch"] for l in metrics(workdir).splitlines()]
  if epochs != [1, 2]:
    return "data lost", f"metrics epochs {epochs}"
  return expect_error(second, "is being trained by pid")


# --- Signals. ---
def logged_step(line: str) -> int:
  """The step of a progress line ("step N/TOTAL"), else -1 (fused chunks log at their last step)."""
  match = re.search(r"\bstep (\d+)/\d+", line)
  return int(match.group(1)) if match else -1


def _signal_case(name, signum, expected_rc):
  def fn(ctx):
    workdir = os.path.join(ctx.root, "run")
    proc = subprocess.Popen(ctx.base(workdir, epochs=2), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    err = []
    for line in proc.stderr:
      err.append(line)
      if logged_step(line) >= 80:
        proc.send_signal(signum)
        break
    err.extend(proc.stderr)
    proc.wait()
    text = "".join(err)
    if "Traceback" in text:
      return "crash", text.strip().splitlines()[-1][:150]
    if proc.returncode != expected_rc or "Run the same command again" not in text:
      return "silent wrong", f"exit {proc.returncode}"
    resumed = run(ctx.base(workdir, epochs=2))
    return expect_ok(resumed, lambda: metrics(workdir) == metrics(ctx.finished), "resumed to the same metrics")
  case(f"signals: {name}")(fn)


_signal_case("SIGTERM mid-epoch", signal.SIGTERM, 143)
_signal_case("SIGINT (Ctrl-C) mid-epoch", signal.SIGINT, 130)


# --- The doctor. ---
def _command(module: str):
  """`python -m cnn_val.<module> --workdir=W [flags]` as a function of (W, *flags)."""
  return lambda workdir, *extra: run([PY, "-m", f"cnn_val.{module}", f"--workdir={workdir}", *extra])


_doctor = _command("doctor")


@case("doctor: a directory that is not a run")
def _doctor_not_run(ctx):
  os.makedirs(os.path.join(ctx.root, "empty"))
  return expect_error(_doctor(os.path.join(ctx.root, "empty")), "not a cnn_val run directory")


@case("doctor: a run killed before its first evaluation")
def _doctor_unevaluated(ctx):
  workdir = ctx.copy_finished()
  for name in ("metrics.jsonl",):
    os.remove(os.path.join(workdir, name))
  return expect_error(_doctor(workdir), "has not been evaluated yet")


@case("doctor: a diverged run whose rate became infinite")
def _doctor_inf(ctx):
  workdir = ctx.copy_finished()
  _write(os.path.join(workdir, "diverged.json"), b'{"step": 40, "lr": null, "last_good_step": 34}')
  result = _doctor(workdir)
  return expect_ok(result, lambda: "diverged" in result.stdout, "diagnosed as diverged")


@case("doctor: --verify with one seed")
def _doctor_one_seed(ctx):
  return expect_error(_doctor(ctx.copy_finished(), "--verify", "--seeds=1"), "seeds")


@case("doctor: an unknown lever")
def _doctor_lever(ctx):
  return expect_error(_doctor(ctx.copy_finished(), "--verify", "--levers=wider,taller"), "taller")


@case("doctor: a corrupt audit.json")
def _doctor_audit(ctx):
  workdir = ctx.copy_finished()
  _write(os.path.join(workdir, "audit.json"), b"{not json")
  return expect_error(_doctor(workdir), "audit.json")


# --- Evaluating a checkpoint without training. ---
_evaluate = _command("evaluate")


@case("evaluate: a directory that is not a run")
def _evaluate_not_run(ctx):
  os.makedirs(os.path.join(ctx.root, "empty"))
  return expect_error(_evaluate(os.path.join(ctx.root, "empty")), "not a cnn_val run directory")


@case("evaluate: --weights=ema of a run without a moving average")
def _evaluate_no_ema(ctx):
  return expect_error(_evaluate(ctx.copy_finished(), "--weights=ema"), "--config.ema_decay")


@case("evaluate: an unknown split")
def _evaluate_split(ctx):
  return expect_error(_evaluate(ctx.copy_finished(), "--split=holdout"), "--split")


@case("evaluate: the best checkpoint corrupt")
def _evaluate_corrupt(ctx):
  workdir = ctx.copy_finished()
  for step in os.listdir(os.path.join(workdir, "checkpoints", "best")):
    _flip(os.path.join(workdir, "checkpoints", "best", step))
  return expect_error(_evaluate(workdir, "--checkpoint=best"), "checkpoint")


# --- A full disk (a small tmpfs; needs root, else the case is not run). ---
def _mount_tmpfs(path: str, size: int) -> bool:
  os.makedirs(path, exist_ok=True)
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                        capture_output=True).returncode == 0


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _disk_full_case(name, fraction):
  """A run on a tmpfs holding `fraction` of a finished run's bytes: it must stop with one clear message about
  the disk; once space is freed (the tmpfs grown), the same command must finish with the reference metrics."""
  def fn(ctx):
    disk = os.path.join(ctx.root, "disk")
    if not _mount_tmpfs(disk, max(4096, int(_dir_bytes(ctx.finished) * fraction))):
      return "not run", "mounting a tmpfs needs root"
    try:
      workdir = os.path.join(disk, "run")
      first = run(ctx.base(workdir))
      outcome, note = expect_error(first, "No space left on device")
      note = note.replace(ctx.root, "...")
      if outcome != "clear error":
        return outcome, f"full disk: {note}"
      subprocess.run(["mount", "-o", f"remount,size={4 * _dir_bytes(ctx.finished) + (1 << 20)}", disk], check=True)
      resumed = run(ctx.base(workdir))
      outcome, _ = expect_ok(resumed, lambda: metrics(workdir) == metrics(ctx.finished))
      return outcome, f"{note[:90]}; after freeing space: " + (
          "same metrics" if outcome == "survived" else resumed.stderr.strip().splitlines()[-1][:80])
    finally:
      subprocess.run(["umount", "-l", disk], capture_output=True)
  case(f"disk full: {name}")(fn)


_disk_full_case("at start (no room for the run directory)", 0.0)
_disk_full_case("at the first checkpoint", 0.4)
_disk_full_case("at the last epoch's checkpoint", 1.15)


# --- The ablation engine. ---
def _ablate(ctx, *args):
  return run([PY, "launch/ablate.py", "--config=configs/default.py", f"--out={ctx.root}/sweep",
              f"--config.data.data_dir={ctx.data_dir}", "--config.num_epochs=1", *args])


@case("ablate: an arm with an unknown field")
def _arm_field(ctx):
  return expect_error(_ablate(ctx, "--arm=base:", "--arm=x:model.dropuot_rate=0.1"), "dropuot_rate")


@case("ablate: an arm with a bad value")
def _arm_value(ctx):
  return expect_error(_ablate(ctx, "--arm=base:", "--arm=x:model.dropout_rate=1.5"), "dropout_rate=1.5")


@case("ablate: a malformed arm")
def _arm_malformed(ctx):
  return expect_error(_ablate(ctx, "--arm=base:", "--arm=nocolon"), "nocolon")


@case("ablate: over --max_runs")
def _max_runs(ctx):
  return expect_error(_ablate(ctx, "--arm=base:", "--arm=w:model.dropout_rate=0.3", "--seeds=3", "--max_runs=2"),
                      "max_runs")


def _kill_test(ctx, kills: int) -> tuple[str, str, float]:
  """One 3-epoch run SIGKILLed `kills` times at random moments, restarted each time with the same command."""
  start = time.perf_counter()
  reference = os.path.join(ctx.root, "reference")
  run(ctx.base(reference, epochs=3))
  workdir = os.path.join(ctx.root, "killed")
  rng = random.Random(0)
  killed = 0
  while killed < kills:
    proc = subprocess.Popen(ctx.base(workdir, epochs=3), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(2.0, 25.0))  # start-up, data, pre-flight, steps, evaluation, checkpoint writes
    if proc.poll() is not None:
      break  # finished before this kill
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed += 1
  final = run(ctx.base(workdir, epochs=3))
  ok = final.returncode == 0 and metrics(workdir) == metrics(reference)
  return ("survived" if ok else "data lost"), f"{killed} SIGKILLs, metrics.jsonl {'identical' if ok else 'DIFFERS'}", \
      time.perf_counter() - start


def main(argv):
  del argv
  sys.path.insert(0, REPO)
  from tests.conftest import write_tiny_source  # pylint: disable=import-outside-toplevel
  from cnn_val.data import fashion_mnist_offline  # pylint: disable=import-outside-toplevel
  scratch = tempfile.mkdtemp(prefix="cnn_val_robustness_")
  data_dir = os.path.join(scratch, "data")
  fashion_mnist_offline.prepare(data_dir, source_dir=write_tiny_source(os.path.join(scratch, "source")))
  shared = Ctx(scratch, data_dir, os.path.join(scratch, "finished"))
  result = run(shared.base(shared.finished))
  if result.returncode:
    raise SystemExit(f"the reference run failed:\n{result.stderr[-2000:]}")
  selected = [(n, f) for n, f in CASES if any(part in n for part in _ONLY.value.split(","))]

  def one(item):
    name, fn = item
    ctx = Ctx(tempfile.mkdtemp(dir=scratch), data_dir, shared.finished)
    start = time.perf_counter()
    try:
      outcome, note = fn(ctx)
    except Exception as e:  # pylint: disable=broad-except  (the harness itself must report, not stop)
      outcome, note = "crash", f"harness: {type(e).__name__}: {e}"[:150]
    return name, outcome, note, time.perf_counter() - start

  rows = []
  with concurrent.futures.ThreadPoolExecutor(_JOBS.value) as pool:
    for row in pool.map(one, selected):
      rows.append(row)
      print(f"{row[1]:>12}  {row[3]:5.1f} s  {row[0]}: {row[2]}", flush=True)
  if _KILLS.value:
    outcome, note, seconds = _kill_test(Ctx(tempfile.mkdtemp(dir=scratch), data_dir, shared.finished), _KILLS.value)
    rows.append((f"kills: {_KILLS.value} SIGKILLs of one run", outcome, note, seconds))
  print("\n| case | outcome | seconds | what happened |\n| --- | --- | --- | --- |")
  for name, outcome, note, seconds in rows:
    print(f"| {name} | {outcome} | {seconds:.1f} | {note.replace('|', '/')} |")
  counts = {o: sum(r[1] == o for r in rows) for o in OUTCOMES}
  print(f"\n{len(rows)} cases: " + ", ".join(f"{n} {o}" for o, n in counts.items()))
  shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)

"""The training loop's parts, around the steps of `steps.py`: the calls that train (one step each, or fused
chunks over a device-resident split), one epoch over them with progress lines, NaN checks at logging
boundaries, a stop signal and the profiler between calls, and the wall-time clock by phase (timing.json).
`train.train_and_evaluate` puts them together.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from absl import logging
import jax
import numpy as np


class WallTime:
  """Where this process's wall time goes: exclusive seconds per phase (a phase inside another is not counted
  twice), written to timing.json and summarised at the end of the run."""

  def __init__(self):
    self.start = time.perf_counter()
    self.seconds: dict[str, float] = {}
    self._stack: list[list] = []

  @contextlib.contextmanager
  def __call__(self, phase: str):
    begin = time.perf_counter()
    self._stack.append([phase, 0.0])  # [name, seconds of phases nested in it]
    try:
      yield
    finally:
      _, nested = self._stack.pop()
      spent = time.perf_counter() - begin
      self.seconds[phase] = self.seconds.get(phase, 0.0) + spent - nested
      if self._stack:
        self._stack[-1][1] += spent

  def as_dict(self) -> dict:
    total = time.perf_counter() - self.start
    phases = dict(sorted(self.seconds.items(), key=lambda kv: -kv[1]))
    return {"total_seconds": round(total, 3), "phases": {k: round(v, 3) for k, v in phases.items()},
            "other_seconds": round(total - sum(phases.values()), 3)}

  def line(self) -> str:
    d = self.as_dict()
    total = max(d["total_seconds"], 1e-9)
    parts = [f"{k} {v:.1f} s ({v / total:.0%})" for k, v in d["phases"].items() if v >= 0.05]
    return f"{d['total_seconds']:.1f} s: " + ", ".join(parts + [f"other {d['other_seconds']:.1f} s"])


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
      else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
  """Every `config.log_every_steps` steps: fetch the metric sums, check them, log a progress line."""

  def __init__(self, config, total_steps: int, schedule, check, writer=None, prefix: str = "", quiet: bool = False):
    """`check(sums, step)` sees each interval's sums first (None: no check); `prefix` starts each line (a
    population's member); `quiet` writes the TensorBoard scalars without the line."""
    self._config, self._total, self._schedule, self._check = config, total_steps, schedule, check
    self._writer, self._prefix, self._quiet = writer, prefix, quiet
    self.every = config.log_every_steps
    self._timed_steps, self._timed_seconds = 0, 0.0  # every interval but the first (compilation)
    self.restart()

  def restart(self, step: int | None = None):
    self._t, self._step = time.perf_counter(), step

  def __call__(self, step: int, epoch: int, sums: dict, executed: int | None = None):
    """The line for the interval ending at `step`; `executed`: the step training has reached (a fused chunk
    reports the intervals it crossed when it ends; the rate is timed over executed steps)."""
    if self._check is not None:
      self._check(sums, step)
    executed = step if executed is None else executed
    now = time.perf_counter()
    loss, acc, lr = sums["loss_sum"] / sums["count"], sums["correct"] / sums["count"], float(self._schedule(step))
    line = (f"{self._prefix}step {step}/{self._total}  epoch {epoch}/{self._config.num_epochs}  "
            f"loss {loss:.4f}  acc {acc:.4f}  lr {lr:.3g}")
    # The first interval of a run includes compilation, and a second interval reported by the same chunk
    # took no time of its own: no rate for either.
    if self._step is not None and executed > self._step:
      rate = (executed - self._step) * self._config.batch_size / (now - self._t)
      self._timed_steps += executed - self._step
      self._timed_seconds += now - self._t
      # The ETA from the whole run's rate so far: one slow interval (a save, a busy neighbour) does not move it.
      eta = (self._total - executed) * self._timed_seconds / self._timed_steps
      line += f"  {rate:.0f} img/s  ETA {format_duration(eta)}"
    if not self._quiet:
      logging.info(line)
    if self._writer is not None:  # per-step scalars in TensorBoard, besides the per-epoch ones
      self._writer.scalars(step, {"train/loss": float(loss), "train/accuracy": float(acc), "train/lr": lr})
    if executed != self._step:
      self.restart(executed)


class StopOnSignal:
  """While training: SIGINT and SIGTERM ask the loop to stop at the next step boundary (a second one of the
  same kind acts at once). Installed only from the main thread, and the previous handlers are restored, so
  importing or calling the library elsewhere changes no process-wide state."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum == signum:  # asked twice: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.signum = signum
    logging.warning("%s received: stopping at the next step (send it again to stop at once).",
                    signal.Signals(signum).name)

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False


class Profiler:
  """`config.profile_steps` > 0: a JAX profiler trace of that many train steps, starting PROFILE_AFTER steps into
  this process's training (past compilation), written to `workdir/profile` for TensorBoard's profile tab."""

  PROFILE_AFTER = 10

  def __init__(self, workdir: str, num_steps: int, start_step: int):
    self._dir, self._n = os.path.join(workdir, "profile"), int(num_steps)
    self._begin = start_step + self.PROFILE_AFTER
    self._active = self._done = False
    self._started_at = 0

  def __call__(self, step: int, outputs) -> None:
    """After each training call, at `step` (fused chunks advance it by several steps per call)."""
    if not self._n or self._done:
      return
    if not self._active and step >= self._begin:
      jax.block_until_ready(outputs)
      jax.profiler.start_trace(self._dir)
      self._active, self._started_at = True, step
    elif self._active and step >= self._started_at + self._n:
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self._active, self._done = False, True
      logging.info("Profiler trace of %d steps written to %s (tensorboard --logdir %s, Profile tab).", self._n,
                   self._dir, self._dir)

  def close(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False


def _per_step(host_metrics: list[dict], members: int = 0) -> dict:
  """Fetched calls' metrics -> {name: one value per step} (a per-step call's scalars, a chunk's stacked rows);
  with `members` (a population's calls: `[members, steps]` each), {name: `[members, steps]`}."""
  shape = (members, -1) if members else (-1,)
  return {k: np.concatenate([np.reshape(m[k], shape) for m in host_metrics], axis=-1) for k in host_metrics[0]}


def _total(values: dict) -> dict:
  """Sums over steps (`first_*`: the minimum), over one array per metric (the last axis: steps): the same
  steps give the same numbers whichever way they were called and fetched."""
  return {k: (np.min if k.startswith("first_") else np.sum)(v, axis=-1) for k, v in values.items()}


def train_epoch(calls, state, *, step: int, epoch: int, progress,
                 stop: StopOnSignal | None = None, on_stop=None, profiler: Profiler | None = None,
                 clock: WallTime | None = None, members: int = 0):
  """One epoch of training calls; returns the new state, the step count and the epoch's summed metrics.

  `calls` yields `(fn, steps)`: `fn(state) -> (state, metric sums)` trains `steps` steps (one step of the
  per-step loop, or a fused chunk whose metrics are stacked per step). Metrics are fetched when a call
  crosses a multiple of `config.log_every_steps`, and a progress line reports every multiple crossed with
  the sums of exactly its steps, whichever way they were called. NaN checks, the profiler and a stop signal
  act between calls. With `clock`, the process's first call (compilation, then its steps) is timed on its own.

  A population (`members` > 0: each call trains that many models at once, its metrics `[members, steps]`)
  takes one `Progress` per member in `progress`, and returns each metric's sums per member (`[members]`).
  """
  epoch_values, unreported, pending = [], None, []
  reported = step  # progress has covered the epoch's steps up to here
  report = (lambda b, sums, ex: [p(b, epoch, {k: v[m] for k, v in sums.items()}, executed=ex)
                                 for m, p in enumerate(progress)]) if members else \
      (lambda b, sums, ex: progress(b, epoch, sums, executed=ex))
  every = (progress[0] if members else progress).every
  for fn, num_steps in calls:
    if clock is not None and "first train call (compilation)" not in clock.seconds:
      with clock("first train call (compilation)"):
        state, step_metrics = fn(state)
        jax.block_until_ready(step_metrics)
    else:
      state, step_metrics = fn(state)
    before, step = step, step + num_steps
    if profiler is not None:
      profiler(step, step_metrics)
    if stop is not None and stop.signum is not None:
      jax.block_until_ready(step_metrics)
      on_stop(stop.signum, step)
    pending.append(step_metrics)  # device arrays: fetching them every call would stall the pipeline
    if step // every > before // every:
      fetched = _per_step(jax.device_get(pending), members)
      pending = []
      epoch_values.append(fetched)
      unreported = fetched if unreported is None else {k: np.concatenate([unreported[k], v], axis=-1)
                                                       for k, v in fetched.items()}
      for boundary in range((before // every + 1) * every, step + 1, every):
        upto = boundary - reported
        report(boundary, _total({k: v[..., :upto] for k, v in unreported.items()}), step)
        unreported, reported = {k: v[..., upto:] for k, v in unreported.items()}, boundary
  if pending:
    epoch_values.append(_per_step(jax.device_get(pending), members))
  return state, step, _total({k: np.concatenate([f[k] for f in epoch_values], axis=-1) for k in epoch_values[0]})


def step_calls(p_train, batches, key):
  """The per-step loop's calls: one host batch each."""
  for batch in batches:
    yield (lambda state, batch=batch: p_train(state, batch, key)), 1


def chunk_calls(p_chunk, data, indices: np.ndarray, key, chunk: int):
  """Fused calls over device-resident data: `chunk` steps each (the epoch's last call takes the rest)."""
  for start in range(0, len(indices), chunk):
    idx = np.ascontiguousarray(indices[start:start + chunk].swapaxes(0, 1))  # [devices, steps, per_device]
    yield (lambda state, idx=idx: p_chunk(state, data["image"], data["label"], idx, key)), idx.shape[1]


def population_chunk_calls(p_chunk, data, indices: list[np.ndarray], keys, chunk: int, hparams: dict):
  """A population's fused calls: member m's `indices[m]` (its own epoch order), `chunk` steps each, its dropout
  key `keys[m]` and hyperparameters `hparams[name][m]` (`steps.population_train_chunk`)."""
  stacked = np.stack(indices, axis=1)  # [steps, members, devices, per_device]
  for start in range(0, len(stacked), chunk):
    idx = np.ascontiguousarray(stacked[start:start + chunk].transpose(2, 1, 0, 3))  # [devices, members, steps, b]
    yield (lambda state, idx=idx: p_chunk(state, data["image"], data["label"], idx, keys, hparams)), idx.shape[2]

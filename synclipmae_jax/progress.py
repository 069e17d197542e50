"""What the train loop delegates: periods, metric means, throughput, the non-finite guard.

big_vision's `u.itstime` / `u.chrono` are the models: the loop asks `itstime` whether a
periodic action is due, `PendingMetrics` keeps the per-step metrics on the device until a
log line, an image, an evaluation or a checkpoint needs them (then checks and averages
them), and `Chrono` times the steps between those points (without the compiling first
step) for clips/s, model TFLOP/s, steps/s and the ETA.
"""

from __future__ import annotations

import time

import jax
import numpy as np


class NonFiniteLossError(RuntimeError):
  """A loss term or the gradient norm became NaN or infinite; nothing was checkpointed."""


def check_finite(step: int, metrics: dict) -> None:
  """Raises NonFiniteLossError naming the step and the first non-finite loss term."""
  for name, value in metrics.items():
    if (name.startswith("loss/") or name == "grad_norm") and not np.isfinite(value):
      term = name.removeprefix("loss/")
      raise NonFiniteLossError(
          f"non-finite {term} ({value}) at step {step}; stopping without checkpointing this state")


def itstime(step: int, every_steps: int, final: bool) -> bool:
  """Whether a periodic action is due after `step`: every `every_steps`, and at the end."""
  return final or step % every_steps == 0


class PendingMetrics:
  """Per-step metrics left on the device until the loop needs them (the host never waits
  for a step it has just dispatched); `flush` fetches them in one transfer, checks every
  step in order (`check_finite`, so the first non-finite step is named) and sums them in
  float64 on the host; `pop_means` returns the means since the last pop."""

  def __init__(self):
    self.pending, self.sums, self.count = [], {}, 0

  def add(self, step: int, device_metrics: dict) -> None:
    self.pending.append((step, device_metrics))

  def flush(self) -> None:
    for step, metrics in jax.device_get(self.pending):
      check_finite(step, metrics)
      for k, v in metrics.items():
        self.sums[k] = self.sums.get(k, 0.0) + float(v)
      self.count += 1
    self.pending = []

  def pop_means(self) -> dict[str, float]:
    self.flush()
    means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
    self.sums, self.count = {}, 0
    return means


class Chrono:
  """Wall time per step between the loop's synchronisation points (`mark` after each flush).

  Nothing before the first mark is counted (the loop marks right after the run's first,
  compiling step), nor the time between `mark(step)` and `resume(step)`.
  """

  def __init__(self, total_steps: int, batch_size: int, step_flops: float):
    self.total_steps, self.batch_size, self.step_flops = total_steps, batch_size, step_flops
    self.start = time.time()
    self.last = None  # (time, step) of the last mark
    self.steps, self.seconds = 0, 0.0

  def mark(self, step: int) -> None:
    now = time.time()
    if self.last is not None and step > self.last[1]:
      self.steps += step - self.last[1]
      self.seconds += now - self.last[0]
    if self.last is None or step > self.last[1]:
      self.last = (now, step)

  def resume(self, step: int) -> None:
    """After work that is not step time: if `step` was marked, time from now on."""
    if self.last is not None and self.last[1] == step:
      self.last = (time.time(), step)

  def pop(self, step: int) -> dict[str, float]:
    """perf/* metrics of the steps timed since the last pop (and the ETA of the run)."""
    out = {"perf/model_tflops_per_step": self.step_flops / 1e12}
    if self.steps:
      out["perf/steps_per_sec"] = self.steps / self.seconds
      out["perf/clips_per_sec"] = self.steps * self.batch_size / self.seconds
      out["perf/model_tflops_per_sec"] = self.steps * self.step_flops / self.seconds / 1e12
      out["perf/eta_seconds"] = (self.total_steps - step) * self.seconds / self.steps
    self.steps, self.seconds = 0, 0.0
    return out

  def elapsed(self) -> float:
    return time.time() - self.start

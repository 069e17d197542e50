"""What the train loop delegates: periods, metric means, throughput, the non-finite guard.

big_vision's `u.itstime` / `u.chrono` are the models: the loop asks `itstime` whether a
periodic action is due, `StepMeans` averages the per-step metrics between log lines, and
`Chrono` times the steps (input + step, without the compiling first step) for clips/s,
model TFLOP/s, steps/s and the ETA.
"""

from __future__ import annotations

import time

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


class StepMeans:
  """Sums of per-step metrics; `pop()` returns their means since the last pop."""

  def __init__(self):
    self.sums, self.count = {}, 0

  def add(self, metrics: dict) -> None:
    for k, v in metrics.items():
      self.sums[k] = self.sums.get(k, 0.0) + float(v)
    self.count += 1

  def pop(self) -> dict[str, float]:
    means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
    self.sums, self.count = {}, 0
    return means


class Chrono:
  """Step timing between log lines; the first step of a run (it compiles) is not timed."""

  def __init__(self, first_step: int, total_steps: int, batch_size: int, step_flops: float):
    self.first_step, self.total_steps = first_step, total_steps
    self.batch_size, self.step_flops = batch_size, step_flops
    self.start = time.time()
    self.steps, self.seconds = 0, 0.0
    self.step_start = None

  def step_begins(self) -> None:
    self.step_start = time.time()

  def step_ends(self, step: int) -> None:
    if step > self.first_step + 1:
      self.steps += 1
      self.seconds += time.time() - self.step_start

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

"""What the train loop delegates: periods, metric means, throughput, the non-finite guard.

big_vision's `u.itstime` / `u.chrono` are the models: the loop asks `itstime` whether a
periodic action is due, `PendingMetrics` keeps the per-step metrics on the device until a
log line, an image, an evaluation or a checkpoint needs them (then checks and averages
them), and `Chrono` times the steps between those points (without the compiling first
step) for clips/s, model TFLOP/s in all and per device, MFU, the fraction of the time the host
waited for input, device memory, steps/s and the ETA.
"""

from __future__ import annotations

import contextlib
import time

import jax
import numpy as np

from synclipmae_jax import chip_peaks


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
  """Wall time per step between the loop's synchronisation points (`mark` after each flush),
  and how well the devices are used in it.

  Nothing before the first mark is counted (the loop marks right after the run's first,
  compiling step), nor the time between `mark(step)` and `resume(step)`. `pop` gives, for the
  steps timed since the last pop (MaxText's per-device TFLOP/s and MFU):
  - model TFLOP/s in all and per device: `step_flops` (the whole step on all devices) over the
    time per step, divided by the mesh's device count (per device and MFU are absent when the
    step has no FLOP count, 0);
  - MFU: achieved FLOP/s / (peak FLOP/s per device x devices), the peak from
    `chip_peaks.peak_flops_per_device` (a chip's bf16 peak / its devices; on CPU the host's
    measured f32 matmul peak / its CPU device count, so with the tests' 8 fake devices sharing
    the host's cores, MFU = achieved / host peak); absent for a device kind not in the table;
  - the input-wait fraction: the time the host spent in `input_wait` (getting and assembling
    the next batch) over the wall time of the timed steps;
  - device memory: the most, over this process's devices, of the bytes in use now and at their
    peak, where the backend reports them (`Device.memory_stats()`; CPU does not: then absent).
  """

  def __init__(self, total_steps: int, batch_size: int, step_flops: float, devices,
               clock=time.perf_counter):
    """`devices`: the mesh's devices (all processes'); `clock`: seconds (a test's fake)."""
    self.total_steps, self.batch_size, self.step_flops = total_steps, batch_size, step_flops
    devices = list(devices)
    self.num_devices = len(devices)
    self.local_devices = [d for d in devices if d.process_index == jax.process_index()]
    self.peak_flops_per_device = chip_peaks.peak_flops_per_device(devices)
    self.clock = clock
    self.start = clock()
    self.last = None  # (time, step) of the last mark
    self.steps, self.seconds, self.wait_seconds = 0, 0.0, 0.0
    self.waited = 0.0  # input wait since the last mark or resume

  @contextlib.contextmanager
  def input_wait(self):
    """Times its block as the host waiting for input (the next batch)."""
    start = self.clock()
    try:
      yield
    finally:
      self.waited += self.clock() - start

  def mark(self, step: int) -> None:
    now = self.clock()
    if self.last is not None and step > self.last[1]:
      self.steps += step - self.last[1]
      self.seconds += now - self.last[0]
      self.wait_seconds += self.waited
    if self.last is None or step > self.last[1]:
      self.last, self.waited = (now, step), 0.0

  def resume(self, step: int) -> None:
    """After work that is not step time: if `step` was marked, time from now on."""
    if self.last is not None and self.last[1] == step:
      self.last, self.waited = (self.clock(), step), 0.0

  def pop(self, step: int) -> dict[str, float]:
    """perf/* metrics of the steps timed since the last pop (and the ETA of the run)."""
    out = {"perf/model_tflops_per_step": self.step_flops / 1e12}
    if self.peak_flops_per_device:
      out["perf/peak_tflops_per_device"] = self.peak_flops_per_device / 1e12
    if self.steps:
      flops_per_sec = self.steps * self.step_flops / self.seconds
      out["perf/steps_per_sec"] = self.steps / self.seconds
      out["perf/clips_per_sec"] = self.steps * self.batch_size / self.seconds
      out["perf/model_tflops_per_sec"] = flops_per_sec / 1e12
      if self.step_flops > 0:  # 0: XLA gave no count (train_state.lowered_flops)
        out["perf/tflops_per_sec_per_device"] = flops_per_sec / self.num_devices / 1e12
        if self.peak_flops_per_device:
          out["perf/mfu"] = flops_per_sec / (self.peak_flops_per_device * self.num_devices)
      out["perf/input_wait_fraction"] = self.wait_seconds / self.seconds
      out["perf/eta_seconds"] = (self.total_steps - step) * self.seconds / self.steps
    out.update(self.device_memory())
    self.steps, self.seconds, self.wait_seconds = 0, 0.0, 0.0
    return out

  def device_memory(self) -> dict[str, float]:
    """perf/device_memory_gib (in use) and perf/device_memory_peak_gib: the most over this
    process's devices; absent where the backend reports no memory statistics."""
    stats = [s for s in (d.memory_stats() for d in self.local_devices) if s]
    out = {}
    for name, key in (("perf/device_memory_gib", "bytes_in_use"),
                      ("perf/device_memory_peak_gib", "peak_bytes_in_use")):
      if stats and all(key in s for s in stats):
        out[name] = max(s[key] for s in stats) / chip_peaks.GIB
    return out

  def elapsed(self) -> float:
    return self.clock() - self.start

"""progress.Chrono: time per step, per-device TFLOP/s, MFU, input-wait fraction and device memory
(against a fake clock and fake devices, every figure by hand), and on the tiny run the figures
that the console and TensorBoard get (issue 28)."""

import dataclasses

import pytest

from synclipmae_jax import chip_peaks, progress

GIB = 2 ** 30


@dataclasses.dataclass
class FakeDevice:
  device_kind: str
  process_index: int = 0
  stats: dict | None = None
  platform: str = "tpu"

  def memory_stats(self):
    return self.stats


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def run_steps(chrono, clock, first, last, wait, compute):
  """Steps first..last, each `wait` seconds getting its batch and `compute` seconds more."""
  for _ in range(first, last + 1):
    with chrono.input_wait():
      clock.now += wait
    clock.now += compute


def test_chrono_figures_of_the_timed_steps():
  clock = FakeClock()
  local = [FakeDevice("TPU v4", 0, {"bytes_in_use": 3 * GIB, "peak_bytes_in_use": 5 * GIB}),
           FakeDevice("TPU v4", 0, {"bytes_in_use": 4 * GIB, "peak_bytes_in_use": 4.5 * GIB})]
  remote = [FakeDevice("TPU v4", 1, {"bytes_in_use": 9 * GIB, "peak_bytes_in_use": 9 * GIB})] * 2
  peak = chip_peaks.PEAK_BF16_TFLOPS_PER_CHIP["TPU v4"] * 1e12
  step_flops = 0.25 * peak * 4  # at 1 s per step on 4 devices: MFU 1/4
  chrono = progress.Chrono(100, 32, step_flops, local + remote, clock=clock)
  run_steps(chrono, clock, 1, 1, wait=7.0, compute=60.0)  # the compiling step: not timed
  chrono.mark(1)
  run_steps(chrono, clock, 2, 11, wait=0.1, compute=0.9)  # 10 steps of 1 s, 0.1 s waiting
  chrono.mark(11)
  chrono.mark(11)  # a second sync at the same step adds nothing
  clock.now += 50.0  # an evaluation: not step time
  chrono.resume(11)
  run_steps(chrono, clock, 12, 16, wait=0.6, compute=0.4)  # 5 steps of 1 s, 0.6 s waiting
  chrono.mark(16)
  out = chrono.pop(16)
  assert out["perf/steps_per_sec"] == pytest.approx(1.0)
  assert out["perf/clips_per_sec"] == pytest.approx(32.0)
  assert out["perf/model_tflops_per_sec"] == pytest.approx(step_flops / 1e12)
  assert out["perf/tflops_per_sec_per_device"] == pytest.approx(step_flops / 4 / 1e12)
  assert out["perf/peak_tflops_per_device"] == pytest.approx(peak / 1e12)
  assert out["perf/mfu"] == pytest.approx(0.25)
  assert out["perf/input_wait_fraction"] == pytest.approx((10 * 0.1 + 5 * 0.6) / 15)
  assert out["perf/eta_seconds"] == pytest.approx(84.0)
  # the most over this process's devices (not the other process's), in use and at peak
  assert out["perf/device_memory_gib"] == pytest.approx(4.0)
  assert out["perf/device_memory_peak_gib"] == pytest.approx(5.0)
  assert chrono.elapsed() == pytest.approx(67 + 10 + 50 + 5)
  again = chrono.pop(16)  # nothing timed since the last pop
  assert "perf/mfu" not in again and "perf/input_wait_fraction" not in again
  assert again["perf/device_memory_gib"] == pytest.approx(4.0)


def test_chrono_leaves_out_what_it_cannot_know():
  """No peak for an unknown chip, no memory without statistics, no per-device FLOP/s or MFU
  without the step's FLOP count."""
  clock = FakeClock()
  chrono = progress.Chrono(10, 8, 2e12, [FakeDevice("TPU v99")] * 2, clock=clock)
  chrono.mark(1)
  run_steps(chrono, clock, 2, 3, wait=0.0, compute=2.0)
  chrono.mark(3)
  out = chrono.pop(3)
  assert out["perf/tflops_per_sec_per_device"] == pytest.approx(2e12 / 2 / 2 / 1e12)
  assert out["perf/input_wait_fraction"] == 0.0
  assert not {"perf/mfu", "perf/peak_tflops_per_device", "perf/device_memory_gib",
              "perf/device_memory_peak_gib"} & set(out)
  uncounted = progress.Chrono(10, 8, 0.0, [FakeDevice("TPU v4")], clock=clock)  # no FLOP count
  uncounted.mark(1)
  run_steps(uncounted, clock, 2, 2, wait=1.0, compute=1.0)
  uncounted.mark(2)
  out = uncounted.pop(2)
  assert out["perf/input_wait_fraction"] == pytest.approx(0.5)
  assert not {"perf/mfu", "perf/tflops_per_sec_per_device"} & set(out)


def test_tiny_run_logs_per_device_tflops_mfu_and_input_wait(tiny_run):
  """The last log period's figures of configs/demo.py:tiny on 8 fake CPU devices: the peak per
  device is the host's measured matmul peak / 8, so MFU = achieved / host peak, in (0, 1]."""
  _, _, metrics = tiny_run
  per_device = metrics["perf/tflops_per_sec_per_device"]
  peak = metrics["perf/peak_tflops_per_device"]
  assert per_device > 0 and peak > 0
  assert per_device * 8 == pytest.approx(metrics["perf/model_tflops_per_sec"], rel=1e-12)
  assert 0 < metrics["perf/mfu"] <= 1
  assert metrics["perf/mfu"] == pytest.approx(per_device / peak, rel=1e-12)
  assert 0 <= metrics["perf/input_wait_fraction"] <= 1
  assert "perf/device_memory_gib" not in metrics  # XLA:CPU reports no memory statistics

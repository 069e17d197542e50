"""chip_peaks: a peak for every chip whose HBM is known, NVIDIA's by CUDA device name, unknown
kinds give no peak, and on CPU the host's matmul peak measured once and shared by its devices."""

import types

import jax
import pytest

from synclipmae_jax import chip_peaks


def device(kind, platform, **where):
  return types.SimpleNamespace(device_kind=kind, platform=platform, **where)


def test_every_chip_with_known_hbm_has_a_peak_and_unknown_kinds_none():
  assert set(chip_peaks.HBM_GIB_PER_CHIP) <= set(chip_peaks.PEAK_BF16_TFLOPS_PER_CHIP)
  assert chip_peaks.peak_flops_per_device([device("TPU v5", "tpu")]) == 459e12  # v5p
  assert chip_peaks.peak_flops_per_device([device("NVIDIA H100 80GB HBM3", "gpu")]) == 989e12
  assert chip_peaks.peak_flops_per_device([device("NVIDIA A100-SXM4-40GB", "gpu")]) == 312e12
  assert chip_peaks.peak_flops_per_device([device("TPU v99", "tpu")]) is None


def test_devices_sharing_a_chip_share_its_peak():
  """TPU v4 listed per TensorCore (two devices at each chip's coordinates) vs megacore."""
  cores = [device("TPU v4", "tpu", coords=(x, 0, 0), core_on_chip=c) for x in range(2)
           for c in range(2)]
  chips = [device("TPU v4", "tpu", coords=(x, 0, 0)) for x in range(4)]
  assert chip_peaks.devices_per_chip(cores) == 2 and chip_peaks.devices_per_chip(chips) == 1
  assert chip_peaks.peak_flops_per_device(cores) == 275e12 / 2
  assert chip_peaks.peak_flops_per_device(chips) == 275e12


def test_cpu_peak_is_measured_once_and_split_over_the_hosts_cpu_devices():
  host = chip_peaks.cpu_matmul_peak()
  assert chip_peaks.cpu_matmul_peak() is host  # cached: one measurement per process
  assert 1e8 < host < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s: a CPU's f32 matmul
  per_device = chip_peaks.peak_flops_per_device(jax.devices("cpu"))
  assert per_device * jax.local_device_count(backend="cpu") == pytest.approx(host, rel=1e-12)

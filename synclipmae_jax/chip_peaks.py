"""What one device can do at most: HBM and peak dense bf16 FLOP/s per chip, and on CPU the f32
matmul peak measured in this process.

The tables are keyed by jax's `device_kind`. TPU kinds as libtpu names them (checked on the
devices of `jax.experimental.topologies.get_topology_desc`: v4 "TPU v4", v5e "TPU v5 lite",
v5p "TPU v5", v6e "TPU v6 lite"); their peaks are Google Cloud's per-chip bf16 figures. NVIDIA
kinds are the CUDA device names, one entry per SKU name the driver reports; their peaks are
NVIDIA's dense (no structured sparsity) bf16 tensor-core figures: A100 312 TFLOP/s (SXM4 and
PCIe), H100 SXM5 ("80GB HBM3") 989, H100 PCIe 756, H100 NVL 835.

A CPU has no datasheet peak that XLA reaches: its reference is what XLA's own f32 matmul
(the dtype the CPU configs compute in) achieves on this host, measured once per process
(`cpu_matmul_peak`, about a second). The benchmarks (benchmarks/harness.py) use the same
`matmul_peak`. Used for MFU in the training log (`progress.Chrono`) and by the AOT tool
(`tools/aot.py`: HBM headroom, step time at a given MFU).
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp

GIB = 2 ** 30
HBM_GIB_PER_CHIP = {"TPU v2": 16, "TPU v3": 32, "TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95,
                    "TPU v6 lite": 32}

_A100, _H100_SXM, _H100_PCIE, _H100_NVL = 312, 989, 756, 835
PEAK_BF16_TFLOPS_PER_CHIP = {
    "TPU v2": 45, "TPU v3": 123, "TPU v4": 275, "TPU v5 lite": 197, "TPU v5": 459,
    "TPU v6 lite": 918,
    "NVIDIA A100-SXM4-40GB": _A100, "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100, "NVIDIA A100-PCIE-80GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA H100 80GB HBM3": _H100_SXM, "NVIDIA H100 PCIe": _H100_PCIE,
    "NVIDIA H100 NVL": _H100_NVL,
}


def matmul_peak(n: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
  """FLOP/s of a jitted n^3 matmul on the default device: 2 n^3 over the median time of
  `repeats` calls, after one compiling warm-up."""
  a = jnp.ones((n, n), dtype)
  b = jnp.ones((n, n), dtype)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, b).block_until_ready()
    seconds.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(seconds)


@functools.cache
def cpu_matmul_peak() -> float:
  """This host's f32 matmul FLOP/s (all its cores: XLA:CPU runs one matmul on a thread pool of
  the host's size), measured once per process: median of 3 after a warm-up, about a second at
  the 68-160 GFLOP/s of a 2-core VM."""
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    return matmul_peak(repeats=3)


def devices_per_chip(devices) -> int:
  """Devices sharing one chip: 2 where TPU v4's TensorCores are listed as devices of their own
  (libtpu's topology descriptions), else 1 (a v4 VM's megacore devices, every other chip)."""
  coords = {(getattr(d, "slice_index", 0), tuple(d.coords)) for d in devices
            if hasattr(d, "coords")}
  return len(devices) // len(coords) if coords else 1


def peak_flops_per_device(devices) -> float | None:
  """Peak FLOP/s of one of `devices` (all of one kind), or None when the kind is not in the table.

  TPU and GPU: the chip's dense bf16 peak over the devices sharing a chip. CPU: the host's
  measured f32 matmul peak divided by this process's CPU device count, since jax's CPU devices
  (one by default, 8 fake ones in the tests) share the host's cores: MFU over all of them is
  then achieved / host peak.
  """
  devices = list(devices)
  if devices[0].platform == "cpu":
    return cpu_matmul_peak() / jax.local_device_count(backend="cpu")
  tflops = PEAK_BF16_TFLOPS_PER_CHIP.get(devices[0].device_kind)
  return None if tflops is None else tflops * 1e12 / devices_per_chip(devices)

"""Shared pieces of the benchmarks: machine facts, the f32 matmul peak (`matmul_peak`, from
synclipmae_jax/chip_peaks.py, which the training log's MFU uses too), a timed train step.

Every benchmark measures its reference (the matmul peak, or the peer model) in the same
process and run as its subject, and prints the load average before and after, since a
benchmark on a shared 2-core machine is only as good as the machine's idleness.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax

from configs import demo
from synclipmae_jax import experiment, sharding, train_state
from synclipmae_jax.chip_peaks import matmul_peak  # pylint: disable=unused-import


def mid_config():
  """A mid-size model: ViT-S/16 encoder at 112 px, decoder 256 x 4, 8 clips x 8 frames."""
  c = demo.get_config()
  c.model.update(encoder_size="S", image_size=112, patch_size=16)
  c.model.decoder.update(width=256, depth=4, num_heads=8, mlp_dim=1024)
  c.data.update(global_batch_size=8, window_frames=8)
  c.model.audio.input_context_frames = 0  # as measured in BENCHMARKS (a): no audio beyond the window
  return c


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}"


def load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def finish(path: str, result: dict) -> None:
  """Prints the load after the run and writes `result` (with the machine) as JSON to `path`."""
  print(f"load after: {load()}")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump({"machine": machine(), **result}, f, indent=1)


def timed(fn, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls of fn() (which must block until its result is ready)."""
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    out.append(time.perf_counter() - start)
  return out


class TrainStep:
  """The real jitted train step of `config` on `devices`, with an initialised state and batch."""

  def __init__(self, config, devices=None):
    self.config = config
    self.exp = experiment.build(config, sharding.make_mesh(config.mesh, devices))
    self.step = self.exp.train_step
    self.flops = self.exp.step_flops
    self.num_params = self.exp.num_params
    with self.exp.scope():
      self.state = self.exp.init(jax.random.PRNGKey(0))
      self.batch = sharding.global_batch(train_state.random_batch(config), self.exp.mesh)
    self.compile_seconds = None

  def __call__(self):
    with self.exp.scope():
      self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready(metrics)

  def compile(self) -> float:
    start = time.perf_counter()
    with self.exp.scope():
      self.step.lower(self.state, self.batch).compile()
    self.compile_seconds = time.perf_counter() - start
    return self.compile_seconds


def torch_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """PyTorch's f32 n^3 matmul FLOP/s in this process (the reference of the PyTorch benchmarks)."""
  import torch  # pylint: disable=import-outside-toplevel
  a, b = torch.ones(n, n), torch.ones(n, n)
  torch.mm(a, b)
  return 2 * n ** 3 / statistics.median(timed(lambda: torch.mm(a, b), repeats))

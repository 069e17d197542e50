"""Quiet by default: a training run's console shows a short summary, one progress line per
log period and the evaluation results; library logging goes to WORKDIR/log.txt."""

import os
import re
import subprocess
import sys

from synclipmae_jax import console
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_console_is_short_and_library_logging_goes_to_the_log_file(tiny_run, tmp_path):
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "synclipmae_jax.main", "--config=configs/demo.py:tiny",
             f"--workdir={workdir}", f"--config.data.directory={tiny_run[0].data.directory}",
             "--config.log_every_steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO,
             XLA_FLAGS=xla_flags.with_devices(1))
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout.splitlines()
  assert out[0].startswith("SyncLipMAE: encoder tiny")
  progress = [line for line in out if line.startswith("step ")]
  assert [line.split(" | ")[0] for line in progress] == [f"step {s}/4" for s in (1, 2, 3, 4)]
  assert all("loss " in line and "contrastive " in line for line in progress)
  # from step 2 on (the first step compiles and is not timed): the chips' use, MFU against
  # the host's matmul peak (XLA:CPU reports no device memory)
  use = re.compile(r" \| [\d.e+-]+ [GT]FLOP/s/device, MFU [\d.e+-]+%, input wait [\d.e+-]+% \| ")
  assert all(use.search(line) for line in progress[1:]), progress
  assert "FLOP/s" not in progress[0] and not any("mem " in line for line in progress)
  assert sum(line.startswith("eval sync @ ") for line in out) == 2  # every 2 steps of 4
  assert len(out) == 2 + 4 + 2
  err = [line for line in result.stderr.splitlines() if "synthetic clips" not in line]
  assert not any("CheckpointManagerOptions" in line or line.startswith("I1") for line in err), err
  with open(workdir / "log.txt") as f:
    log = f.read()
  assert "CheckpointManager created" in log and "[4] " in log  # orbax and the clu metric lines


def test_progress_line_shows_the_chips_use_compactly():
  means = {"perf/steps_per_sec": 3.4, "perf/eta_seconds": 738.0,
           "perf/tflops_per_sec_per_device": 123.4, "perf/mfu": 0.4487,
           "perf/input_wait_fraction": 0.0031, "perf/device_memory_gib": 11.23,
           "perf/device_memory_peak_gib": 13.91, "loss/total": 1.5, "loss/recon_video": 0.5}
  assert console.progress_line(500, 3000, means) == (
      "step 500/3000 | 3.40 steps/s, ETA 12.3 min | 123 TFLOP/s/device, MFU 44.9%, input wait "
      "0.31%, mem 11.2/13.9 GiB | loss 1.5: recon_video 0.5")
  cpu = {k: v for k, v in means.items() if "memory" not in k and k != "perf/mfu"}
  cpu["perf/tflops_per_sec_per_device"] = 0.0123
  assert " | 12.3 GFLOP/s/device, input wait 0.31% | " in console.progress_line(500, 3000, cpu)
  untimed = {"loss/total": 1.5, "loss/recon_video": 0.5}  # the first, compiling step
  assert console.progress_line(1, 3000, untimed) == "step 1/3000 | loss 1.5: recon_video 0.5"

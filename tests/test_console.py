"""Quiet by default: a training run's console shows a short summary, one progress line per
log period and the evaluation results; library logging goes to WORKDIR/log.txt."""

import os
import subprocess
import sys

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
  assert sum(line.startswith("eval sync @ ") for line in out) == 2  # every 2 steps of 4
  assert len(out) == 2 + 4 + 2
  err = [line for line in result.stderr.splitlines() if "synthetic clips" not in line]
  assert not any("CheckpointManagerOptions" in line or line.startswith("I1") for line in err), err
  with open(workdir / "log.txt") as f:
    log = f.read()
  assert "CheckpointManager created" in log and "[4] " in log  # orbax and the clu metric lines

"""The trained runs that many tests share (tests/conftest.py's `tiny_run` and `quick_run`), each
trained once per test run under a file lock in a folder the pytest-xdist workers share.

`python -m tests.shared_runs ROOT` trains both in ROOT ahead of the tests: scripts/test.sh starts
it in the background while it sets up the TPU and Beam venvs (pip, mostly waiting on the disk), so
that the training overlaps the set-up instead of holding up a test worker. The fixtures then find
the runs done, or wait on the lock for the one being trained; whoever takes a lock first trains.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def tiny(root: pathlib.Path):
  """(config, workdir, final metrics without "step") of configs/demo.py:tiny trained 4 steps on
  8 fake devices (data=2, fsdp=2, tensor=2) in this process (which must have them: conftest's
  XLA flags), with checkpoints and sync evaluations at steps 2 and 4."""
  import filelock  # pylint: disable=import-outside-toplevel
  from configs import demo  # pylint: disable=import-outside-toplevel
  from synclipmae_jax import train  # pylint: disable=import-outside-toplevel
  config = demo.get_config("tiny")
  config.data.directory = str(root / "tiny_run_data")
  config.mesh.update(data=2, fsdp=2, tensor=2)
  workdir = root / "tiny_run"
  with filelock.FileLock(str(root / "tiny_run.lock")):
    if not (workdir / "metrics.json").exists():  # written at the end of training
      train.train_and_evaluate(config, str(workdir))
  with open(workdir / "metrics.json") as f:
    metrics = json.load(f)
  del metrics["step"]
  return config, str(workdir), metrics


def quick(root: pathlib.Path) -> str:
  """The workdir of configs/demo.py:quick (docs/training.md: K=15 about 97 %), trained by the command a user
  runs (`python -m synclipmae_jax.main`, one CPU device, XLA's default flags) in a folder named by
  the config's digest."""
  import filelock  # pylint: disable=import-outside-toplevel
  from configs import demo  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256(demo.get_config("quick").to_json(sort_keys=True).encode()).hexdigest()[:12]
  workdir = root / f"quick_run_{digest}"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)  # the tests' 8 fake devices would split the step 8 ways
  with filelock.FileLock(str(root / "quick_run.lock")):
    if not (workdir / "metrics.json").exists():  # written at the end of training
      result = subprocess.run(
          [sys.executable, "-m", "synclipmae_jax.main", "--config=configs/demo.py:quick",
           f"--workdir={workdir}", f"--config.data.directory={root / 'quick_run_data'}"],
          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
      if result.returncode:
        raise RuntimeError(f"training the quick run failed:\n{result.stderr[-3000:]}")
  return str(workdir)


if __name__ == "__main__":
  from tests import xla_flags  # pylint: disable=ungrouped-imports
  os.environ.setdefault("XLA_FLAGS", xla_flags.with_devices(8))  # as conftest, before jax
  runs_root = pathlib.Path(sys.argv[1])
  runs_root.mkdir(parents=True, exist_ok=True)
  quick(runs_root)
  tiny(runs_root)

"""Test set-up (before jax is imported): 8 fake CPU devices for the sharding tests, compiled with
the flags of tests/xla_flags.py (why: there)."""

import hashlib
import json
import os
import subprocess
import sys

from tests import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags.with_devices(8))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# As synclipmae_jax/storage.py sets it, before anything (orbax, TFDS) calls epath: gs:// through
# gcsfs, which tests/test_gcs.py points at a GCS server on localhost. gcsfs reads the other at
# import: without it every call first asks the bucket's type over gRPC of the real service.
os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


import pytest  # pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A module's own folder for the synthetic data (generated there on first use)."""
  return str(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(config, workdir, final metrics): configs/demo.py:tiny trained 4 steps on 8 fake devices
  (data=2, fsdp=2, tensor=2), checkpoints and sync evaluations at steps 2 and 4. Shared by the
  tests that read a trained workdir (checkpointing, export, the tools), which must not change
  it; trained once per session: pytest-xdist's workers share it through a file lock in their
  common temporary folder."""
  import filelock  # pylint: disable=import-outside-toplevel
  from configs import demo  # pylint: disable=import-outside-toplevel
  from synclipmae_jax import train  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
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


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
  """The workdir of configs/demo.py:quick, a model that has learnt sync (README: K=15 about
  97 %), for every test that needs one: trained once per test run by the command a user runs
  (`python -m synclipmae_jax.main`, one CPU device, XLA's default flags), in a folder named by
  the config's digest; pytest-xdist's workers share it through a file lock."""
  import filelock  # pylint: disable=import-outside-toplevel
  from configs import demo  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  digest = hashlib.sha256(demo.get_config("quick").to_json(sort_keys=True).encode()).hexdigest()[:12]
  workdir = root / f"quick_run_{digest}"
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  env.pop("XLA_FLAGS", None)  # this process's 8 fake devices would split the step 8 ways
  with filelock.FileLock(str(root / "quick_run.lock")):
    if not (workdir / "metrics.json").exists():  # written at the end of training
      result = subprocess.run(
          [sys.executable, "-m", "synclipmae_jax.main", "--config=configs/demo.py:quick",
           f"--workdir={workdir}", f"--config.data.directory={root / 'quick_run_data'}"],
          cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
      assert result.returncode == 0, result.stderr[-3000:]
  return str(workdir)

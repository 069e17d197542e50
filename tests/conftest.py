"""Test set-up: 8 fake CPU devices for the sharding tests (set before jax is imported)."""

import json
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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

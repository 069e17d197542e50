"""Test set-up (before jax is imported): 8 fake CPU devices for the sharding tests, compiled with
the flags of tests/xla_flags.py (why: there)."""

import os
import pathlib

from tests import shared_runs, xla_flags

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


def _runs_root(tmp_path_factory):
  """Where the shared trained runs live: the session's temporary folder (pytest-xdist's workers
  share their parent), or $SYNCLIPMAE_TEST_RUNS when set, so that a developer iterating on one
  test file reuses the runs of an earlier pytest call (the folder is not checked against the
  code: empty it after a change to training). scripts/test.sh sets it to a fresh folder."""
  if os.environ.get("SYNCLIPMAE_TEST_RUNS"):
    return pathlib.Path(os.environ["SYNCLIPMAE_TEST_RUNS"])
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(config, workdir, final metrics): configs/demo.py:tiny trained 4 steps on 8 fake devices
  (data=2, fsdp=2, tensor=2), checkpoints and sync evaluations at steps 2 and 4. Shared by the
  tests that read a trained workdir (checkpointing, export, the tools), which must not change
  it (tests/shared_runs.py)."""
  return shared_runs.tiny(_runs_root(tmp_path_factory))


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
  """The workdir of configs/demo.py:quick, a model that has learnt sync (docs/training.md: K=15 about
  97 %), for every test that needs one (tests/shared_runs.py)."""
  return shared_runs.quick(_runs_root(tmp_path_factory))

"""A run in a bucket, against a real GCS server (tests/gcs_server.py: fake-gcs-server on localhost):
the tiny run's shards uploaded to gs://BUCKET/data, the tiny config trained from them on 8 fake
devices with --workdir=gs://BUCKET/runs/a and the compilation cache in the bucket, stopped by
SIGTERM (exit status 75) and relaunched: it ends with the metrics of the same run on local disk
(conftest.tiny_run) to the digit, the bucket holds everything of the run, the relaunch loads its
train step from the cache, `checkpointing.load` and `synclipmae-export` read the run from the
bucket, and nothing is written under the current directory.

ArrayRecord's reader cannot be pointed at the server, so the run reads the shards from local
copies (storage.local_copies).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from synclipmae_jax import checkpointing, storage
from tests import gcs_server, xla_flags

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "synclipmae-test"
RUN = f"gs://{BUCKET}/runs/a"
TIMEOUT = 600


@pytest.fixture(scope="module")
def emulator():
  """The GCS server's environment for this module's processes (and this one, while it runs)."""
  with gcs_server.running(BUCKET) as env, pytest.MonkeyPatch.context() as patch:
    for key, value in env.items():
      patch.setenv(key, value)
    yield env


def _command(workdir, cache_dir, data_cache):
  """The tiny run's command (conftest.tiny_run's config and mesh) on the bucket's shards."""
  return [sys.executable, "-m", "synclipmae_jax.main",
          f"--config={os.path.join(REPO, 'configs', 'demo.py')}:tiny", f"--workdir={workdir}",
          "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
          "--config.data.source=array_record",
          f"--config.data.train_pattern=gs://{BUCKET}/data/train-*.array_record",
          f"--config.data.eval_pattern=gs://{BUCKET}/data/validation-*.array_record",
          f"--config.data.directory={data_cache}", f"--config.compilation_cache_dir={cache_dir}"]


@pytest.fixture(scope="module")
def bucket_run(emulator, tiny_run, tmp_path_factory):
  config, _, _ = tiny_run
  for split in ("train", "validation"):
    for local in storage.glob(os.path.join(config.data.directory, "*", f"{split}-*.array_record")):
      storage.path(f"gs://{BUCKET}/data/{os.path.basename(local)}").write_bytes(
          open(local, "rb").read())
  cwd = tmp_path_factory.mktemp("cwd")  # must stay empty
  root = tmp_path_factory.mktemp("gcs")
  command = _command(RUN, f"gs://{BUCKET}/compilation_cache", root / "data_cache")
  env = dict(os.environ, **emulator, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_flags.with_devices(8), PYTHONPATH=REPO)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # every program goes to the cache
  logs = []

  def launch():
    logs.append(root / f"launch{len(logs)}.log")
    with open(logs[-1], "w") as log:
      return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)

  # SIGTERM once the run has written its config (its preemption watcher is on from the start),
  # long before the 4 steps end: the first compile takes seconds.
  first = launch()
  deadline = time.time() + TIMEOUT
  while not storage.path(f"{RUN}/config.json").exists() and first.poll() is None:
    assert time.time() < deadline, "the first launch wrote no config.json"
    time.sleep(0.2)
  first.send_signal(signal.SIGTERM)
  statuses = [first.wait(timeout=TIMEOUT)]
  stopped = checkpointing.steps(RUN)
  statuses.append(launch().wait(timeout=TIMEOUT))
  return {"statuses": statuses, "stopped": stopped, "logs": logs, "cwd": cwd, "root": root,
          "local": tiny_run}


def _log(run, i):
  return open(run["logs"][i]).read()[-4000:]


def test_sigterm_stops_the_run_with_the_preemption_status_and_a_relaunch_finishes_it(bucket_run):
  assert bucket_run["statuses"][0] == checkpointing.PREEMPTED_EXIT_STATUS, _log(bucket_run, 0)
  assert bucket_run["statuses"][1] == 0, _log(bucket_run, 1)
  config = bucket_run["local"][0]
  assert len(bucket_run["stopped"]) == 1 and bucket_run["stopped"][0] < config.num_train_steps, \
      bucket_run["stopped"]
  assert f"stopped at step {bucket_run['stopped'][0]}, checkpoint saved" in _log(bucket_run, 0)


def test_the_bucket_run_ends_with_the_local_runs_metrics(bucket_run):
  local = bucket_run["local"][2]
  remote = json.loads(storage.path(f"{RUN}/metrics.json").read_text())
  assert remote.pop("step") == bucket_run["local"][0].num_train_steps
  assert {k: v for k, v in remote.items() if not k.startswith("perf/")} == {
      k: v for k, v in local.items() if not k.startswith("perf/")}


def test_the_bucket_holds_the_run_and_the_current_directory_nothing(bucket_run):
  config = bucket_run["local"][0]
  run = storage.path(RUN)
  periodic = range(config.checkpoint_every_steps, config.num_train_steps + 1,
                   config.checkpoint_every_steps)
  assert checkpointing.steps(RUN) == sorted({*bucket_run["stopped"], *periodic})
  assert checkpointing.read_config(RUN).to_dict()["data"]["train_pattern"].startswith("gs://")
  names = {p.name for p in run.iterdir()}
  assert {"config.json", "metrics.json", "log.txt", "checkpoints"} <= names, names
  assert any(n.startswith("events.out.tfevents") for n in names), names
  assert os.listdir(bucket_run["cwd"]) == []


def test_the_relaunch_loads_its_train_step_from_the_cache_in_the_bucket(bucket_run):
  assert any(storage.path(f"gs://{BUCKET}/compilation_cache").iterdir())
  log = storage.path(f"{RUN}/log.txt").read_text()  # both launches append to it
  outcomes = [line.rsplit("persistent compilation cache: ", 1)[1].strip()
              for line in log.splitlines() if "persistent compilation cache: " in line]
  assert outcomes[-1] == "hit", outcomes


def test_load_and_export_read_the_run_from_the_bucket(bucket_run, tmp_path):
  _, local_workdir, _ = bucket_run["local"]
  remote, local = checkpointing.load(RUN), checkpointing.load(local_workdir)
  assert remote.step == local.step
  for a, b in zip(jax.tree.leaves(remote.params), jax.tree.leaves(local.params)):
    np.testing.assert_array_equal(a, b)  # the same programs on the same data, resumed exactly
  out = tmp_path / "torch"
  result = subprocess.run(
      [sys.executable, "-m", "synclipmae_torch.export_cli", f"--workdir={RUN}", f"--out={out}"],
      cwd=bucket_run["cwd"], env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
      capture_output=True, text=True, timeout=TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((out / "config.json").read_text())["step"] == remote.step
  assert (out / "model.safetensors").stat().st_size > 0

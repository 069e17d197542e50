"""Real multi-host training: two processes on localhost == one process, and resume.

Two `python -m synclipmae_jax.main --jax_distributed` processes (loopback coordinator, gloo CPU
collectives, 4 fake CPU devices each) train the tiny config on the (data=2, fsdp=2, tensor=2)
mesh, each feeding its own block of every global batch and saving its own iterator state with
every checkpoint. A second two-process job resumes a copy of that run from its step-2
checkpoint (as after a crash: the later checkpoints are removed) and trains to the end.
Both end with the parameters of the shared tiny run (conftest.tiny_run: the same config, data
and mesh, trained by one process on its 8 fake devices). A third job gets SIGTERM on one process
only: through JAX's coordination service both stop at the same step, save it and exit with the
preemption status.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

from synclipmae_jax import checkpointing
from tests import tiny_training, xla_flags


pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600


def _command(data_dir, workdir, *overrides):
  """The tiny run's command (conftest.tiny_run's config) with `overrides` (--config.KEY=VALUE)."""
  return [sys.executable, "-m", "synclipmae_jax.main", "--config=configs/demo.py:tiny",
          f"--workdir={workdir}", f"--config.data.directory={data_dir}",
          "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
          *overrides]


def _env(num_devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_flags.with_devices(num_devices))
  env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
  # The compilation cache scripts/test.sh sets for the run is used only when it keeps every
  # program (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0, as test.sh sets): JAX's default keeps
  # only what took over a second to compile, so the two processes could load different sets of
  # programs, drift apart, and the collectives' set-up (a 30 s deadline) time out waiting for the
  # slower one. With it, the relaunches load what the first job compiled.
  if env.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS") != "0":
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return env


def _check(procs, logs, expected_status=0):
  for i, (proc, log) in enumerate(zip(procs, logs)):
    try:
      rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      rc = "timeout"
    if rc != expected_status:
      with open(log) as f:
        tail = f.read()[-4000:]
      pytest.fail(f"process {i} exited with {rc}:\n{tail}")


def _start_two_processes(command, workdir):
  port = portpicker.pick_unused_port()
  procs, logs = [], []
  for i in range(2):
    logs.append(f"{workdir}.process{i}.log")
    with open(logs[-1], "w") as f:
      procs.append(subprocess.Popen(
          command + ["--jax_distributed", f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}"],
          cwd=REPO, env=_env(4), stdout=f, stderr=subprocess.STDOUT))
  return procs, logs


def _run_two_processes(data_dir, workdir):
  _check(*_start_two_processes(_command(data_dir, workdir), workdir))


def _checkpoint_steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def _state(workdir, step):
  """The train state of a checkpoint (a tree of dicts), restored onto this process's first device."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata)
  return jax.device_get(checkpointer.restore(path, target))


def _params(workdir, step):
  return _state(workdir, step)["params"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_run):
  config, single, _ = tiny_run
  assert {a: config.mesh[a] for a in ("data", "fsdp", "tensor")} == {"data": 2, "fsdp": 2, "tensor": 2}, \
      "what _command's flags set"
  assert config.checkpoint_every_steps == 2 and config.num_train_steps > 2
  root = tmp_path_factory.mktemp("multihost")
  multi, resumed = str(root / "multi"), str(root / "resumed")
  _run_two_processes(config.data.directory, multi)  # the processes only read the tiny run's data
  shutil.copytree(multi, resumed)
  for step in os.listdir(os.path.join(resumed, "checkpoints")):
    if step.isdigit() and int(step) > 2:
      shutil.rmtree(os.path.join(resumed, "checkpoints", step))
  os.remove(os.path.join(resumed, "metrics.json"))
  _run_two_processes(config.data.directory, resumed)
  return {"single": single, "multi": multi, "resumed": resumed, "steps": config.num_train_steps}


def test_each_process_saves_its_iterator_state(runs):
  assert _checkpoint_steps(runs["multi"]) == _checkpoint_steps(runs["single"])
  for step in _checkpoint_steps(runs["multi"]):
    saved = os.listdir(os.path.join(runs["multi"], "checkpoints", str(step), "iter"))
    assert sorted(f for f in saved if f.startswith("process_")) == [
        "process_0-of-2.json", "process_1-of-2.json"], saved


def test_two_processes_match_one_process_on_eight_devices(runs, tiny_run):
  steps = runs["steps"]
  single, multi = _state(runs["single"], steps), _state(runs["multi"], steps)
  tiny_training.assert_same_training(
      single["params"], multi["params"], tiny_training.first_moment(single["opt_state"]),
      tiny_training.first_moment(multi["opt_state"]), tiny_training.learning_rates(tiny_run[0], steps))
  initial = _params(runs["single"], 2)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(single["params"])))


def test_resumed_two_process_run_reproduces_the_uninterrupted_one(runs):
  assert _checkpoint_steps(runs["resumed"]) == _checkpoint_steps(runs["multi"])
  steps = runs["steps"]
  straight, resumed = _params(runs["multi"], steps), _params(runs["resumed"], steps)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_sigterm_on_one_process_stops_both_at_the_same_saved_step(tiny_run, tmp_path):
  steps = 1000  # far more than run before the signal
  workdir = str(tmp_path / "sigterm")
  procs, logs = _start_two_processes(_command(
      tiny_run[0].data.directory, workdir, f"--config.num_train_steps={steps}",
      f"--config.checkpoint_every_steps={steps}", f"--config.evals.sync.every_steps={steps}",
      f"--config.image_every_steps={steps}", "--config.log_every_steps=1"), workdir)
  deadline = time.time() + TIMEOUT
  process1_log = os.path.join(workdir, "log.process1.txt")  # its absl log (console.py)
  while time.time() < deadline and procs[1].poll() is None:
    if os.path.isfile(process1_log) and re.search(r"\[3\] .*loss/total", open(process1_log).read()):
      break
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)  # process 1 only, as when a pod's hosts are preempted
  _check(procs, logs, expected_status=checkpointing.PREEMPTED_EXIT_STATUS)
  saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert len(saved) == 1 and 3 <= saved[0] < steps, saved
  iterators = os.listdir(os.path.join(workdir, "checkpoints", str(saved[0]), "iter"))
  assert sorted(f for f in iterators if f.startswith("process_")) == [
      "process_0-of-2.json", "process_1-of-2.json"]
  for log in logs:
    with open(log) as f:
      assert f"stopped at step {saved[0]}, checkpoint saved" in f.read(), log

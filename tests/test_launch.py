"""Launch scripts: the TPU pod commands of a named pod, single- and multislice (dry run); on a
fake worker (fake gcloud, sudo and lsof): the training command arrives intact with its
environment, a previous run and stray TPU holders are stopped first, the log is copied to the
workdir's bucket, --restart relaunches while the run exits with the preemption status. The SLURM
recipe's per-task command and its requeue on that status."""

import os
import shlex
import subprocess
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POD = os.path.join(REPO, "launch", "tpu_pod.sh")
SLURM = os.path.join(REPO, "launch", "slurm_gpu.sbatch")
POD_ARGS = ["--name=sync-pod", "--zone=us-east5-a", "--project=my-proj"]
TRAIN_FLAGS = ["--config.num_train_steps=100", "--config.data.train_pattern=/data/train-*.array_record",
               "--config.evals.sync.view=it's full"]


def dry_run(command, *options, train_flags=()):
  args = ["bash", POD, command, *POD_ARGS, *options, "--dry_run"]
  if train_flags:
    args += ["--", *train_flags]
  out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
  return [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]


def _remote(command_line):
  return next(a for a in command_line if a.startswith("--command="))[len("--command="):]


def test_create_tpu_vm_and_queued_resource():
  [create] = dry_run("create", "--accelerator_type=v5p-256")
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "sync-pod", "--zone=us-east5-a",
                    "--project=my-proj", "--accelerator-type=v5p-256", "--version=v2-alpha-tpuv5"]
  create, describe = dry_run("create", "--accelerator_type=v6e-256", "--queued", "--spot")
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert {"--node-id=sync-pod", "--runtime-version=v2-alpha-tpuv6e", "--spot"} <= set(create)
  assert describe[3:5] == ["queued-resources", "describe"]


def test_multislice_is_a_queued_resource_of_n_nodes_reached_on_every_node():
  create, _ = dry_run("create", "--accelerator_type=v5p-256", "--num_slices=2")
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "sync-pod"]
  assert {"--node-count=2", "--node-prefix=sync-pod", "--accelerator-type=v5p-256"} <= set(create)
  assert not any(a.startswith("--node-id") for a in create)
  multislice = ("--num_slices=2",)
  _, scp, ssh = dry_run("install", *multislice)
  [train] = dry_run("train", "--workdir=gs://b/runs/a", *multislice)
  [stop] = dry_run("stop", *multislice)
  for command in (scp, ssh, train, stop):
    assert command[:4] == ["gcloud", "compute", "tpus", "queued-resources"]
    assert {"--node=all", "--worker=all"} <= set(command)
  [logs] = dry_run("logs", "--node=1", "--worker=3", *multislice)
  assert logs[3:5] == ["queued-resources", "ssh"] and {"--node=1", "--worker=3"} <= set(logs)
  [delete] = dry_run("delete", *multislice)
  assert delete[3:5] == ["queued-resources", "delete"]


def test_bad_num_slices_and_megascale_env_are_errors():
  for option, message in (("--num_slices=0", "--num_slices=0 must be >= 1"),
                          ("--env=MEGASCALE_NUM_SLICES=2", "the TPU runtime sets MEGASCALE_"),
                          ("--env=XLA_FLAGS", "expected NAME=VALUE")):
    result = subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=/w", option, "--dry_run"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def _main_flags(ssh):
  inner = shlex.split(shlex.split(_remote(ssh))[4])
  start = inner.index("synclipmae_jax.main") + 1
  return inner[start:inner.index(">>", start)]


def test_gs_workdir_gets_a_compilation_cache_beside_it_unless_one_is_given():
  [ssh] = dry_run("train", "--workdir=gs://bkt/runs/a")
  assert "--config.compilation_cache_dir=gs://bkt/runs/compilation_cache" in _main_flags(ssh)
  own = "--config.compilation_cache_dir=gs://bkt/cache"
  [ssh] = dry_run("train", "--workdir=gs://bkt/runs/a", train_flags=[own])
  assert [f for f in _main_flags(ssh) if "compilation_cache_dir" in f] == [own]
  [ssh] = dry_run("train", "--workdir=/mnt/runs/a")
  assert not any("compilation_cache_dir" in f for f in _main_flags(ssh))
  [fetch] = dry_run("fetch", "--workdir=gs://bkt/runs/a", "--to=/tmp/m.json")[1:]
  assert fetch == ["gcloud", "storage", "cp", "gs://bkt/runs/a/metrics.json", "/tmp/m.json"]


def test_install_copies_the_tree_and_sets_up_every_worker():
  archive, scp, ssh = dry_run("install")
  assert archive[:2] == ["git", "-C"] and "archive" in archive
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "sync-pod"]
  assert "--worker=all" in ssh
  assert "scripts/setup_env.sh tpu" in _remote(ssh)


def test_train_runs_the_same_distributed_command_on_all_workers():
  [ssh] = dry_run("train", "--workdir=/mnt/runs/a", train_flags=TRAIN_FLAGS)
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "sync-pod"]
  assert "--worker=all" in ssh
  remote = _remote(ssh)
  assert remote.startswith("setsid nohup bash -c ")  # detached: survives the ssh session
  assert _main_flags(ssh) == ["--config=configs/pretrain.py", "--workdir=/mnt/runs/a",
                              "--jax_distributed", *TRAIN_FLAGS]


def test_logs_stop_fetch_status_delete():
  [logs] = dry_run("logs", "--worker=3")
  assert "--worker=3" in logs and _remote(logs).startswith("tail ")
  [stop] = dry_run("stop")
  assert "--worker=all" in stop and "kill -TERM" in _remote(stop)
  _, fetch = dry_run("fetch", "--workdir=/mnt/runs/a", "--to=/tmp/a/metrics.json")
  assert fetch[4:7] == ["scp", "sync-pod:/mnt/runs/a/metrics.json", "/tmp/a/metrics.json"]
  assert "--worker=0" in fetch
  [status] = dry_run("status")
  assert status[3:6] == ["tpu-vm", "describe", "sync-pod"]
  [delete] = dry_run("delete")
  assert delete[3:6] == ["tpu-vm", "delete", "sync-pod"] and "--quiet" in delete
  [delete] = dry_run("delete", "--queued")
  assert delete[3:5] == ["queued-resources", "delete"] and "--force" in delete


def test_missing_pod_name_is_an_error():
  result = subprocess.run(["bash", POD, "train", "--zone=z", "--dry_run"], capture_output=True,
                          text=True)
  assert result.returncode == 2 and "--name=POD is required" in result.stderr


def _fake_bin(directory, name, body):
  path = directory / name
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)


# A worker as the fake gcloud sees it: --command runs in $HOME; `storage cp` copies into
# $BUCKETS/<bucket>/<object>; lsof lists the pids in $TPU_HOLDERS as holding the TPU devices.
FAKE_GCLOUD = r"""
if [ "$1 $2" = "storage cp" ]; then
  dest="$BUCKETS/${4#gs://}"; mkdir -p "$(dirname "$dest")"; exec cp "$3" "$dest"
fi
for a in "$@"; do case "$a" in --command=*) cd "$HOME" && exec bash -c "${a#--command=}";; esac; done
"""

# Each launch appends its argv and environment to $HOME/runs, then exits with the next status
# of $EXIT_STATUSES (0 when none is left).
# of $EXIT_STATUSES (0 when none is left); with $UNTIL_TERM set it runs until SIGTERM, then
# exits with 75 as a preempted run does.
FAKE_PYTHON = r"""
n=$(cat "$HOME/runs" 2>/dev/null | grep -c '^-m' || true)
printf "%s\n" "$@" >> "$HOME/runs"; echo "XLA_FLAGS=$XLA_FLAGS" >> "$HOME/env"; echo "cwd=$(pwd)"
if [ -n "$UNTIL_TERM" ]; then trap 'exit 75' TERM; while :; do sleep 0.1; done; fi
statuses=($EXIT_STATUSES); exit "${statuses[$n]:-0}"
"""


def fake_worker(tmp_path, **env):
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  (home / "synclipmae" / ".venv" / "bin").mkdir(parents=True)
  _fake_bin(bin_dir, "gcloud", FAKE_GCLOUD)
  _fake_bin(bin_dir, "sudo", 'exec "$@"\n')
  _fake_bin(bin_dir, "lsof", 'for p in $TPU_HOLDERS; do echo "$p"; done\n')
  _fake_bin(home / "synclipmae" / ".venv" / "bin", "python", FAKE_PYTHON)
  return home, dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home),
                    BUCKETS=str(tmp_path / "buckets"), **env)


def _launches(home):
  text = (home / "runs").read_text()
  return [["-m", *chunk.splitlines()] for chunk in text.split("-m\n")[1:]]


def test_training_command_reaches_a_worker_intact(tmp_path):
  """Real run with a fake gcloud that executes --command as a worker would (in its home)."""
  home, env = fake_worker(tmp_path)
  subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=/mnt/runs/a", "--wait",
                  "--env=XLA_FLAGS=--xla_a=1 --xla_b='x y'", "--", *TRAIN_FLAGS], check=True, env=env)
  assert _launches(home) == [["-m", "synclipmae_jax.main", "--config=configs/pretrain.py",
                              "--workdir=/mnt/runs/a", "--jax_distributed", *TRAIN_FLAGS]]
  assert (home / "env").read_text() == "XLA_FLAGS=--xla_a=1 --xla_b='x y'\n"
  assert (home / "synclipmae-train.log").read_text().strip() == f"cwd={home / 'synclipmae'}"
  assert (home / "synclipmae-train.pid").read_text().strip().isdigit()
  assert not (home / "synclipmae-train.loop.pid").exists()  # the loop ended


def _reaped(process):
  """Waits for `process` in a thread so that it leaves no zombie (kill -0 fails once it ends)."""
  threading.Thread(target=process.wait, daemon=True).start()
  return process


def test_train_stops_the_previous_run_and_stray_tpu_holders_first(tmp_path):
  previous = _reaped(subprocess.Popen(["sleep", "60"]))
  stray = _reaped(subprocess.Popen(["sleep", "60"]))
  home, env = fake_worker(tmp_path, TPU_HOLDERS=str(stray.pid))
  (home / "synclipmae-train.pid").write_text(f"{previous.pid}\n")
  subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=/mnt/runs/a", "--wait"], check=True,
                 env=env, timeout=60)
  assert previous.wait(timeout=10) == -15  # SIGTERM: a run saves its checkpoint
  assert stray.wait(timeout=10) == -9
  assert len(_launches(home)) == 1


@pytest.mark.parametrize("statuses, launches", [("75 75 0", 3), ("75 3", 2), ("0", 1)])
def test_restart_relaunches_while_preempted_and_copies_the_log_to_the_bucket(
    tmp_path, statuses, launches):
  home, env = fake_worker(tmp_path, EXIT_STATUSES=statuses)
  result = subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=gs://bkt/runs/a", "--wait",
                           "--restart", "--", "--config.seed=3"], env=env, timeout=60)
  runs = _launches(home)
  assert len(runs) == launches and all(r == runs[0] for r in runs)  # the same command each time
  assert "--config.compilation_cache_dir=gs://bkt/runs/compilation_cache" in runs[0]
  assert result.returncode == int(statuses.split()[-1])  # the last run's status
  [log] = (tmp_path / "buckets" / "bkt" / "runs" / "a" / "logs").iterdir()
  assert log.read_text() == (home / "synclipmae-train.log").read_text()
  assert log.read_text().count("cwd=") == launches  # every attempt's output, appended


def _until(condition, timeout=30.0):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


def _ended(pid):
  """The process is gone, or a zombie (an orphan waits for whoever reaps it)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] == "Z"
  except FileNotFoundError:
    return True


def test_stop_ends_the_relaunch_loop_before_the_run_saves_and_exits(tmp_path):
  home, env = fake_worker(tmp_path, UNTIL_TERM="1")
  subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=/mnt/runs/a", "--restart"],
                 check=True, env=env, timeout=60)  # detached
  pidfile, loopfile = home / "synclipmae-train.pid", home / "synclipmae-train.loop.pid"
  _until(lambda: pidfile.exists() and pidfile.read_text().strip())
  run_pid = int(pidfile.read_text())
  subprocess.run(["bash", POD, "stop", *POD_ARGS], check=True, env=env, timeout=60)
  _until(lambda: _ended(run_pid))
  time.sleep(0.5)  # a relaunch, if there were one, would have started by now
  assert len(_launches(home)) == 1 and not loopfile.exists()


def test_without_restart_a_preempted_run_is_not_relaunched(tmp_path):
  home, env = fake_worker(tmp_path, EXIT_STATUSES="75 0")
  result = subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=/mnt/runs/a", "--wait"],
                          env=env, timeout=60)
  assert result.returncode == 75 and len(_launches(home)) == 1


@pytest.mark.parametrize("procid", [0, 3])
def test_slurm_recipe_gives_each_task_its_process_id(tmp_path, procid):
  bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
  bin_dir.mkdir()
  (venv / "bin").mkdir(parents=True)
  _fake_bin(bin_dir, "scontrol", 'printf "gpu-node-7\\ngpu-node-8\\n"\n')
  _fake_bin(venv / "bin", "python", 'printf "%s\\n" "$@" > "$ARGV_OUT"\n')
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-node-[7-8]",
             SLURM_NTASKS="4", SYNCLIPMAE_VENV=str(venv), SYNCLIPMAE_REPO=REPO, DRY_RUN="1")
  out = subprocess.run(["bash", SLURM, "--workdir=/shared/run", "--config.seed=3"], check=True,
                       env=env, capture_output=True, text=True).stdout
  srun = shlex.split(out)
  assert srun[:4] == ["srun", "--ntasks=4", "--ntasks-per-node=1", "bash"]
  argv_out = tmp_path / "argv"
  subprocess.run(srun[3:], check=True, env=dict(env, SLURM_PROCID=str(procid), ARGV_OUT=str(argv_out)))
  assert argv_out.read_text().splitlines() == [
      "-m", "synclipmae_jax.main", "--config=configs/pretrain.py", "--jax_distributed",
      "--coordinator_address=gpu-node-7:12355", "--num_processes=4", "--workdir=/shared/run",
      "--config.seed=3", f"--process_id={procid}"]


@pytest.mark.parametrize("status, requeued", [(75, True), (0, False), (1, False)])
def test_slurm_recipe_requeues_a_preempted_run(tmp_path, status, requeued):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _fake_bin(bin_dir, "scontrol", 'if [ "$1" = requeue ]; then echo "$2" >> "$REQUEUED"; '
            'else printf "gpu-node-7\\n"; fi\n')
  _fake_bin(bin_dir, "srun", f"exit {status}\n")
  requeue_log = tmp_path / "requeued"
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-node-7",
             SLURM_NTASKS="1", SLURM_JOB_ID="4242", SYNCLIPMAE_REPO=REPO, REQUEUED=str(requeue_log))
  result = subprocess.run(["bash", SLURM, "--workdir=/shared/run"], env=env, capture_output=True,
                          text=True)
  assert result.returncode == status
  assert (requeue_log.read_text() if requeue_log.exists() else "") == ("4242\n" if requeued else "")
  header = [l for l in open(SLURM).read().splitlines() if l.startswith("#SBATCH")]
  assert {"#SBATCH --requeue", "#SBATCH --signal=TERM@120"} <= set(header)

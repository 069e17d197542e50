"""Launch scripts: the TPU pod commands of a named pod (dry run), and that the training command
reaches every worker intact (fake gcloud, fake worker); the SLURM recipe's per-task command."""

import os
import shlex
import subprocess

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
  inner = shlex.split(shlex.split(remote)[4])
  main = inner[inner.index("exec") + 1:]
  assert main[:3] == [".venv/bin/python", "-m", "synclipmae_jax.main"]
  assert main[3:6] == ["--config=configs/pretrain.py", "--workdir=/mnt/runs/a", "--jax_distributed"]
  assert main[6:6 + len(TRAIN_FLAGS)] == TRAIN_FLAGS


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


def test_training_command_reaches_a_worker_intact(tmp_path):
  """Real run with a fake gcloud that executes --command as a worker would (in its home)."""
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  (home / "synclipmae" / ".venv" / "bin").mkdir(parents=True)
  _fake_bin(bin_dir, "gcloud", 'for a in "$@"; do case "$a" in --command=*) '
            'cd "$HOME" && bash -c "${a#--command=}";; esac; done\n')
  _fake_bin(home / "synclipmae" / ".venv" / "bin", "python",
            'printf "%s\\n" "$@" > "$HOME/argv"; echo "cwd=$(pwd)"\n')
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home))
  subprocess.run(["bash", POD, "train", *POD_ARGS, "--workdir=/mnt/runs/a", "--wait", "--",
                  *TRAIN_FLAGS], check=True, env=env)
  argv = (home / "argv").read_text().splitlines()
  assert argv == ["-m", "synclipmae_jax.main", "--config=configs/pretrain.py",
                  "--workdir=/mnt/runs/a", "--jax_distributed", *TRAIN_FLAGS]
  assert (home / "synclipmae-train.log").read_text().strip() == f"cwd={home / 'synclipmae'}"
  assert (home / "synclipmae-train.pid").read_text().strip().isdigit()


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

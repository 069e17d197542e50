r"""Running a sweep: each run trained locally or on a Cloud TPU pod, the index kept up to date.

  python -m synclipmae_jax.sweeps.launch --config=configs/demo.py:tiny --sweep_root=/tmp/sweep \
      [--run] [--launcher=local|tpu] [--print] [-- --config.num_train_steps=10 ...]

--config expands the file's `get_hyper` (sweeps.expand) into the index `sweep.json` under
--sweep_root (keeping the status of runs already done); --run trains the runs one after
another, each as its own `python -m synclipmae_jax.main` process (`local`), or hands each
to the pod launcher (`tpu`: launch/tpu_pod.sh train --wait, then fetch of worker 0's
metrics.json; pod options in --launcher_args). Flags after `--` apply to every run.
--print shows the index as a table (--markdown: as a markdown table).

A run's status in the index: `done`, `preempted` (it exited with
`checkpointing.PREEMPTED_EXIT_STATUS` after saving a checkpoint: the next `--run` resumes it), or
`failed (exit N)`; `--run` trains every run not done. The sweep root may be a bucket (`gs://...`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from synclipmae_jax import checkpointing, command_line, storage
from synclipmae_jax.sweeps import expand, index as index_lib

LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "launch", "tpu_pod.sh")


def launch_commands(run: dict, launcher: str, launcher_args=(), dry_run: bool = False) -> list[list[str]]:
  """The commands that train one run: one local process, or the pod launcher's train + fetch."""
  if launcher == "local":
    return [[sys.executable, "-m", "synclipmae_jax.main", *run["flags"]]]
  if launcher == "tpu":
    extra = ["--dry_run"] if dry_run else []
    config = [f for f in run["flags"] if f.startswith("--config=")]  # launcher options
    train_flags = [f for f in run["flags"] if not f.startswith(("--workdir=", "--config="))]
    return [
        ["bash", LAUNCHER, "train", "--wait", *config, f"--workdir={run['workdir']}",
         *launcher_args, *extra, "--", *train_flags],
        ["bash", LAUNCHER, "fetch", f"--workdir={run['workdir']}",
         f"--to={os.path.join(run['workdir'], 'metrics.json')}", *launcher_args, *extra],
    ]
  raise ValueError(f"launcher={launcher!r} must be 'local' or 'tpu'")


def run_sweep(index: dict, sweep_root: str, *, launcher: str = "local", launcher_args=(),
              dry_run: bool = False, rerun: bool = False) -> dict:
  """Trains the runs one after another, updating the index after each."""
  for run in index["runs"]:
    if run["status"] == "done" and not rerun:
      continue
    storage.path(run["workdir"]).mkdir(parents=True, exist_ok=True)
    commands = launch_commands(run, launcher, launcher_args, dry_run)
    if dry_run and launcher == "local":
      print(shlex.join(commands[0]))
      continue
    status = "done"
    files = storage.Mirror(run["workdir"])  # the log is appended to: written locally
    with open(os.path.join(files.local, "sweep_run.log"), "a") as log:
      for command in commands:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        rc = subprocess.run(command, stdout=None if dry_run else log,
                            stderr=None if dry_run else subprocess.STDOUT, check=False).returncode
        if rc:
          status = ("preempted" if rc == checkpointing.PREEMPTED_EXIT_STATUS
                    else f"failed (exit {rc})")
          break
    files.sync()
    run["status"] = "dry_run" if dry_run and status == "done" else status
    index_lib.write_index(index_lib.collect_metrics(index), sweep_root)
  return index


def main(argv, flags_) -> None:
  sweep_root = str(storage.path(flags_.sweep_root))
  common = [a for a in argv[1:] if a != "--"]
  if flags_.config:
    index = expand.expand(flags_.config, sweep_root, common)
    if (storage.path(sweep_root) / index_lib.INDEX_FILE).is_file():  # keep the runs' status
      previous = {r["name"]: r for r in index_lib.read_index(sweep_root)["runs"]}
      for run in index["runs"]:
        if run["name"] in previous and previous[run["name"]]["flags"] == run["flags"]:
          run["status"] = previous[run["name"]]["status"]
    index_lib.write_index(index_lib.collect_metrics(index), sweep_root)
    print(f"{len(index['runs'])} runs -> {storage.path(sweep_root) / index_lib.INDEX_FILE}")
  else:
    index = index_lib.read_index(sweep_root)
  if flags_.run:
    run_sweep(index, sweep_root, launcher=flags_.launcher,
              launcher_args=shlex.split(flags_.launcher_args), dry_run=flags_.dry_run,
              rerun=flags_.rerun)
  if flags_.print:
    print(index_lib.format_table(index_lib.collect_metrics(index), flags_.metrics,
                                 markdown=flags_.markdown))


def run() -> None:
  """Command line (`python -m synclipmae_jax.sweeps.launch`, console script `synclipmae-sweep`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("config", None, "Config file declaring get_hyper, with its :variant; "
                      "without it the existing index in --sweep_root is used.")
  flags.DEFINE_string("sweep_root", None, "Each run's workdir and the index go here.")
  flags.DEFINE_bool("run", False, "Train the runs (one after another).")
  flags.DEFINE_enum("launcher", "local", ["local", "tpu"], "Where the runs train.")
  flags.DEFINE_string("launcher_args", "", "Options for launch/tpu_pod.sh, e.g. '--name=pod --zone=z'.")
  flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
  flags.DEFINE_bool("rerun", False, "Also train runs that the index marks done.")
  flags.DEFINE_bool("print", False, "Print the index as a table.")
  flags.DEFINE_bool("markdown", False, "With --print: a markdown table.")
  flags.DEFINE_string("metrics", index_lib.DEFAULT_METRICS, "Comma-separated metric names or prefixes to show.")
  flags.mark_flags_as_required(["sweep_root"])
  command_line.run(lambda argv: main(argv, flags.FLAGS), __name__)


if __name__ == "__main__":
  run()

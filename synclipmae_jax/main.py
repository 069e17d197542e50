"""Command line: `python -m synclipmae_jax.main --config=configs/demo.py --workdir=DIR`.

Fields are overridden with `--config.x=y` (e.g. `--config.masking.mode=uniform_only`).
On several hosts pass `--jax_distributed` (Cloud TPU fills in the coordinator itself; other
clusters give `--coordinator_address`, `--num_processes`, `--process_id`).

Exit status: 0 when the run reached `num_train_steps`; `checkpointing.PREEMPTED_EXIT_STATUS`
(75) when it stopped early on a preemption notice or SIGTERM after saving that step (relaunch
the same command to resume: `launch/tpu_pod.sh train --restart` and the SLURM script do);
anything else is a failure.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from synclipmae_jax import checkpointing, command_line, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, summaries and metrics go here.")
_DISTRIBUTED = flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  try:
    metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except checkpointing.Preempted as stopped:
    status = checkpointing.PREEMPTED_EXIT_STATUS
    print(f"{stopped}; relaunch to resume (exit status {status})", file=sys.stderr)
    sys.exit(status)
  logging.info("final metrics: %s", metrics)


def run():
  """Console-script entry point (`synclipmae-train`)."""
  command_line.run(main, __name__)


if __name__ == "__main__":
  run()

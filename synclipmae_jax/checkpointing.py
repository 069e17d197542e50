"""Checkpoints of a run, and the public read API for downstream tools.

A workdir describes itself: `config.json` (the training config, written when the run
starts) beside `checkpoints/<step>/{state,iter}` (orbax: the train state and, per process,
the grain iterator).

Training uses `make_manager`, `restore_or_initialize` (resume, or initialise a fresh run and
pass it through the task's initialisation, e.g. the pretrained weights of `config.model.init`), `maybe_save_checkpoint` (the save
policy: every `checkpoint_every_steps`, the last step, and a preemption) and
`PreemptionWatcher` (a preemption notice or SIGTERM on any process -> every process saves the
same step, then the run raises `Preempted`).

A workdir may be a local folder or a bucket (`gs://...`, `storage.py`): orbax writes the
checkpoints straight to it.

Downstream tools use `load(workdir, step=None)`: the trained config and the trainable and
frozen parameters of any step, without optimizer state, restored from abstract shapes onto
whatever devices the reading process has (one CPU device included, whatever mesh trained it).
"""

from __future__ import annotations

import dataclasses
import json
import signal
from typing import Any, Callable

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from synclipmae_jax import sharding, storage, tasks

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------- the workdir's config
def save_config(config, workdir: str) -> None:
  """Writes the training config as `workdir/config.json` (process 0, atomically)."""
  if jax.process_index() != 0:
    return
  storage.write_text(storage.path(workdir) / CONFIG_FILE, config.to_json(indent=1, sort_keys=True))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config a workdir was trained with (lists come back as tuples)."""
  path = storage.path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: {workdir!r} is not a training workdir "
                            f"(or was trained before configs were saved beside checkpoints)")
  return ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))


def _tuples(tree):
  """JSON lists -> tuples (config fields such as windows and logical-axis rules are tuples)."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree


# ---------------------------------------------------------------- training
def make_manager(workdir: str, config) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      storage.path(workdir) / CHECKPOINT_DIR, item_names=("state", "iter"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints, enable_async_checkpointing=True))


def restore_or_initialize(manager: ocp.CheckpointManager, exp, train_iter,
                          initialize: Callable = lambda state: state):
  """The latest checkpoint's state and iterator position, or a fresh state.

  A fresh state is randomly initialised from `config.seed` and then goes through the task's
  `initialize` (pretraining loads the pretrained weights of `config.model.init` there; a resumed
  run ignores them: it has its own).
  """
  config = exp.config
  if manager.latest_step() is not None:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(exp.abstract_state),
        iter=grain.checkpoint.CheckpointRestore(train_iter)))
    logging.info("resumed from step %d", int(restored.state.step))
    return restored.state
  with exp.scope():
    state = exp.init(jax.random.PRNGKey(config.seed))
  return initialize(state)


def maybe_save_checkpoint(manager: ocp.CheckpointManager, step: int, state, train_iter, *,
                          every_steps: int, final: bool, preempted: bool,
                          before_save: Callable[[], None]) -> bool:
  """The save policy: every `every_steps` steps, at the last step and when preempted.

  `before_save` runs first (the loop's non-finite guard over every step up to `step`: it
  raises, so a non-finite state is never saved). Saving is asynchronous and collective: every
  process calls this at the same steps. Returns whether it saved.
  """
  if not (step % every_steps == 0 or final or preempted):
    return False
  before_save()
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), iter=grain.checkpoint.CheckpointSave(train_iter)),
      force=True)
  return True


# The exit status of a run stopped by `Preempted` (`python -m synclipmae_jax.main`): sysexits.h's
# EX_TEMPFAIL ("a temporary failure ... the user is invited to retry"), so that a sweep or a
# launcher tells a preempted run (relaunch it: it resumes) from a finished (0) or failed one.
PREEMPTED_EXIT_STATUS = 75


class Preempted(Exception):
  """The run stopped before its last step (preemption notice or SIGTERM) after saving that step's
  checkpoint: a relaunch resumes it. The command exits with `PREEMPTED_EXIT_STATUS`."""

  def __init__(self, step: int, reason: str):
    super().__init__(f"{reason}: stopped at step {step}, checkpoint saved")
    self.step = step


class PreemptionWatcher:
  """Whether to stop after a step: a preemption notice or SIGTERM on any process, and every
  process stops at the same step (saving a checkpoint is collective).

  With JAX's coordination service (`jax.distributed.initialize`: every multi-process run) its
  preemption notifier catches SIGTERM (the signal a pod's host or SLURM gives before eviction) on
  any process and `multihost_utils.reached_preemption_sync_point(step)` turns True on every
  process at the same step, the one after the largest step any of them had reached. Until then it
  is a local check of a flag: the step loop has no collective and no device-to-host read of ours,
  so hosts dispatch ahead. A process without the service (one host, launched without
  `--jax_distributed`) catches SIGTERM itself. Either way nothing replaces JAX's own notifier.
  """

  def __init__(self):
    self.coordinated = jax.distributed.is_initialized()
    self.signalled = False
    self.previous = None

  def __enter__(self):
    if not self.coordinated:
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if not self.coordinated:
      signal.signal(signal.SIGTERM, self.previous)

  def _handle(self, *_):
    self.signalled = True

  def stop_reason(self, step: int) -> str:
    """'' to go on; otherwise why every process stops after this step."""
    if self.coordinated:
      if multihost_utils.reached_preemption_sync_point(step):
        return "preemption notice (SIGTERM on a process, through JAX's coordination service)"
      return ""
    return "SIGTERM" if self.signalled else ""


# ---------------------------------------------------------------- the read API
@dataclasses.dataclass(frozen=True)
class Restored:
  """A trained step of a workdir: its config and parameters (no optimizer state)."""

  config: ml_collections.ConfigDict  # the training config (`workdir/config.json`)
  step: int
  params: Any  # the task's trainable parameters (SyncLipMAE, or the lip-reading head)
  frozen: Any  # the frozen audio encoder's parameters ({} for the mel front end)


def steps(workdir: str) -> list[int]:
  """The steps a workdir holds checkpoints of, oldest first."""
  directory = storage.path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return []
  return sorted(ocp.utils.checkpoint_steps(directory))


def _reading_experiment(config, mesh):
  """The experiment of `config`'s task on `mesh` (default: this process's first device), with
  the batch-dependent sizes (which do not enter the parameters) set for that mesh."""
  if mesh is None:
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.local_devices()[:1])
  config_here = ml_collections.ConfigDict(config.to_dict())
  config_here.data.global_batch_size = sharding.num_batch_shards(mesh)
  if tasks.name_of(config) == "pretrain":
    config_here.loss.contrastive.group_size = 0
  return tasks.get(config).build(config_here, mesh)


def load(workdir: str, step: int | None = None, *, mesh=None) -> Restored:
  """The config and parameters of `step` (default: the latest) of a training workdir.

  Args:
    workdir: a training run's workdir (`config.json` and `checkpoints/`).
    step: which checkpoint; None = the latest.
    mesh: where to put the parameters, sharded by the config's logical-axis rules; default:
      a one-device mesh of this process's first device. The mesh that trained the run
      does not matter.

  Returns:
    Restored(config, step, params, frozen), arrays on `mesh`.
  """
  config = read_config(workdir)
  available = steps(workdir)
  if not available:
    raise FileNotFoundError(f"no checkpoints in {storage.path(workdir) / CHECKPOINT_DIR}")
  step = available[-1] if step is None else step
  if step not in available:
    raise ValueError(f"{workdir} has no checkpoint of step {step} (it has {available})")
  abstract = _reading_experiment(config, mesh).abstract_state
  target = {"params": abstract.params, "frozen": abstract.frozen}
  target = {k: v for k, v in target.items() if jax.tree.leaves(v)}
  path = storage.path(workdir) / CHECKPOINT_DIR / str(step) / "state"
  with ocp.PyTreeCheckpointer() as checkpointer:
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  return Restored(config=config, step=step, params=restored["params"],
                  frozen=restored.get("frozen", {}))


def initial(workdir: str, *, mesh=None) -> Restored:
  """The random initialisation a workdir's run started from (`config.seed`, before any
  pretrained weights of `config.model.init`), as step 0: the "random encoder" baseline of the
  probes, with the run's own architecture."""
  config = read_config(workdir)
  exp = _reading_experiment(config, mesh)
  with exp.scope():
    state = exp.init(jax.random.PRNGKey(config.seed))
  return Restored(config=config, step=0, params=state.params, frozen=state.frozen)

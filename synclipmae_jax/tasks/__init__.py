"""What `train.py` trains, chosen by name (`config.task`, default "pretrain").

  pretrain  SyncLipMAE pretraining (paper 3): `tasks/pretrain.py`.
  vsr       the lip-reading head on a frozen pretrained encoder (paper 4.3): `tasks/vsr/`.
  unisync   UniSync, the supervised sync baseline, on the pretraining data: `tasks/unisync/`.
  syncnet   SyncNet trained by us on the same data (the LSE row of the sync table): `tasks/syncnet/`.
(`tasks/pair_sync/` is what the two pair-model tasks share, their samples included; it is not a
task.) A task is a package: its `__init__.py` is the task module below, beside the modules only
it uses.

A task module gives train.py's banner sections their task-specific parts:
  validate(config, *, num_devices, process_count)  raise ValueError naming every bad value;
  init_warnings(config) -> [str]                    what the run shouts about at start;
  make_input(config, workdir) -> (train_iter, eval_inputs)  a checkpointable Grain iterator of
                                                    this process's rows of each global batch;
  build(config, mesh) -> experiment                 model, abstract state, jitted init / step,
                                                    `scope()`, `step_flops`;
  build_model(config) -> the task's model           (flax module) for the tools that read a run;
  summary(config, exp, log_path) -> str             the start-of-run console lines;
  evaluator_kwargs(exp, eval_inputs) -> dict        what `config.evals`' evaluators are built with;
  initialize(exp, state) -> state                   a fresh state's pretrained weights, if any;
  write_images(writer, exp, state, batch, step)     periodic images (None: the task has none);
  SYNC_EVALUATOR                                    (tasks with sync evaluation) the evaluator type
                                                    the sync tools use on a run without evals.sync.
"""

from __future__ import annotations

import importlib

TASKS = ("pretrain", "vsr", "unisync", "syncnet")


def name_of(config) -> str:
  return config.get("task", "pretrain")


def get(config):
  """The task module of `config.task`."""
  name = name_of(config)
  if name not in TASKS:
    raise ValueError(f"task={name!r} must be one of {TASKS}")
  return importlib.import_module(f"synclipmae_jax.tasks.{name}")

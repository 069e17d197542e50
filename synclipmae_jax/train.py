"""Training: one linear `train_and_evaluate` in banner sections (big_vision).

config -> mesh -> input -> experiment (model, state shapes, jitted steps) -> checkpoint ->
evaluators -> loop. What is trained is the task of `config.task` (`tasks/`: SyncLipMAE
pretraining by default, or the lip-reading head), which supplies the input, the experiment,
the fresh state's initialisation, the evaluators' inputs and the periodic images. Nothing in the step assumes one device: the batch is assembled from
each process's slice with `jax.make_array_from_process_local_data` and the step is
`jax.jit` with explicit in/out shardings over the (data, fsdp, tensor) mesh, donating the
train state. The loop body delegates to `progress` (periods, means, timing, the non-finite
guard), `checkpointing` (the save policy, preemption) and the evaluators of `config.evals`.

The workdir may be a bucket (`gs://...`): checkpoints, config.json and metrics.json are written
to it directly; the log and TensorBoard's events are written locally and copied to it at every
checkpoint and at the end (`storage.Mirror`). A run stopped before its last step (preemption)
saves that step and raises `checkpointing.Preempted` (the command exits with
`main.PREEMPTED_EXIT_STATUS`); a relaunch resumes it.
"""

from __future__ import annotations

import json

from absl import logging
from clu import metric_writers, periodic_actions
import jax

from synclipmae_jax import checkpointing, compile_cache, console, progress, sharding, storage, tasks
from synclipmae_jax.evaluators import common as evaluators


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the last metrics.

  Raises `checkpointing.Preempted` after saving the step at which a preemption notice or SIGTERM
  stopped the run; watched from the start, so a signal during set-up or compilation stops the
  run after its first step.
  """
  with checkpointing.PreemptionWatcher() as preemption:
    return _train_and_evaluate(config, workdir, preemption)


def _train_and_evaluate(config, workdir: str, preemption) -> dict[str, float]:
  # ---------------------------------------------------------------- config & workdir
  task = tasks.get(config)
  task.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
  compile_cache.configure(config.compilation_cache_dir)  # before anything compiles
  storage.path(workdir).mkdir(parents=True, exist_ok=True)
  files = storage.Mirror(workdir)  # where the log and TensorBoard's events are written
  log_path = files.shown(console.log_to_workdir(files))
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  for warning in task.init_warnings(config):
    logging.warning("%s", warning)  # the console shows warnings, and log.txt keeps them
  checkpointing.save_config(config, workdir)
  writer = metric_writers.create_default_writer(files.local,
                                                just_logging=jax.process_index() > 0)
  writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})

  # ---------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config.mesh)
  b = config.data.global_batch_size

  # ---------------------------------------------------------------- input
  train_iter, eval_inputs = task.make_input(config, workdir)

  # ---------------------------------------------------------------- model, sharding & steps
  exp = task.build(config, mesh)
  console.show(task.summary(config, exp, log_path))

  # ---------------------------------------------------------------- checkpoint
  manager = checkpointing.make_manager(workdir, config)
  state = checkpointing.restore_or_initialize(manager, exp, train_iter,
                                             lambda fresh: task.initialize(exp, fresh))
  step = first_step = int(state.step)

  # ---------------------------------------------------------------- evaluators
  evals = evaluators.from_config(config, **task.evaluator_kwargs(exp, eval_inputs))

  def run_evals(step, final, before=lambda: None):
    results = {}
    for name, evaluator in evals.items():
      if progress.itstime(step, config.evals[name].every_steps, final):
        before()  # the non-finite guard: never evaluate a state it has not passed
        with exp.scope():
          metrics = evaluator.run(state.params, state.frozen)
        writer.write_scalars(step, metrics)
        console.show(console.eval_line(step, name, metrics))
        results.update(metrics)
    return results

  # ---------------------------------------------------------------- train loop
  profile = (periodic_actions.Profile(num_profile_steps=config.profile_steps, logdir=files.local)
             if jax.process_index() == 0 and config.profile_steps else None)
  pending = progress.PendingMetrics()
  chrono = progress.Chrono(config.num_train_steps, b, exp.step_flops, mesh.devices.flat)
  last = {}

  def sync():  # wait for the dispatched steps: check (non-finite guard), sum and time them
    pending.flush()
    chrono.mark(step)

  stopped = None
  first_compile = compile_cache.Lookups()  # the first step compiles the train step
  try:
    while step < config.num_train_steps:
      with chrono.input_wait():
        batch = sharding.global_batch(next(train_iter), mesh)
      with jax.profiler.StepTraceAnnotation("train", step_num=step), exp.scope():
        state, metrics = exp.train_step(state, batch)  # dispatched; runs while we go on
      step += 1
      pending.add(step, metrics)
      if profile:
        profile(step)
      final = step == config.num_train_steps
      if step == first_step + 1:  # the compiling step: time the steps after it
        sync()
        logging.info("first train step (its compilation) done in %.1f s, persistent compilation "
                     "cache: %s", chrono.elapsed(), first_compile.outcome())
      log_now = progress.itstime(step, config.log_every_steps, final)
      if log_now:
        sync()
        last = {**pending.pop_means(), **chrono.pop(step)}
        writer.write_scalars(step, last)
        console.show(console.progress_line(step, config.num_train_steps, last))
      if task.write_images and progress.itstime(step, config.image_every_steps, final):
        sync()
        task.write_images(writer, exp, state, batch, step)
      last.update(run_evals(step, final, before=sync))
      stop = preemption.stop_reason(step)
      checkpointing.maybe_save_checkpoint(
          manager, step, state, train_iter, every_steps=config.checkpoint_every_steps,
          final=final, preempted=bool(stop), before_save=sync)
      if log_now and not manager.is_saving_in_progress():
        # The log and the events to a bucket workdir, never while orbax commits a checkpoint
        # there: gcsfs calls from two threads at once can hang (storage.Mirror).
        writer.flush()
        files.sync()
      chrono.resume(step)  # images, evaluations and saves are not step time
      if stop:
        stopped = checkpointing.Preempted(step, stop)
        logging.warning("%s", stopped)
        break
    if step == first_step:  # nothing left to train: evaluate the restored state
      last = run_evals(step, final=True)
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    files.sync()
  if jax.process_index() == 0 and last:
    # Wall time of this run's loop: steps, periodic evaluation, images and checkpoints.
    last["perf/loop_seconds"] = chrono.elapsed()
    storage.write_text(storage.path(workdir) / "metrics.json", json.dumps(
        {"step": step, **{k: float(v) for k, v in last.items()}}, indent=1, sort_keys=True))
  if stopped:
    raise stopped
  return last


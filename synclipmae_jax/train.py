"""SyncLipMAE pretraining: one linear `train_and_evaluate` in banner sections (big_vision).

mesh -> input -> model -> sharding & init -> step -> checkpoint -> evaluators -> loop.
Nothing in the step assumes one device: the batch is assembled from each process's slice
with `jax.make_array_from_process_local_data` and the step is `jax.jit` with explicit
in/out shardings over the (data, fsdp, tensor) mesh, donating the train state.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import time
from absl import logging
from clu import metric_writers, periodic_actions
import flax.linen as nn
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from data_pipelines import grain_pipeline, synthetic_dataset
from synclipmae_jax import config_schema, evaluation, flops, optimizer, sharding, train_state, visualize
from synclipmae_jax import weights
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import synclipmae


class NonFiniteLossError(RuntimeError):
  """A loss term or the gradient norm became NaN or infinite; nothing was checkpointed."""


def dataset_paths(config) -> tuple[list[str], list[str]]:
  """Training and held-out shard paths; the synthetic dataset is generated on first use."""
  d = config.data
  if d.source == "array_record":
    train, held_out = sorted(glob.glob(d.train_pattern)), sorted(glob.glob(d.eval_pattern))
    if not train or not held_out:
      raise ValueError(f"no shards match data.train_pattern={d.train_pattern!r} ({len(train)}) "
                       f"or data.eval_pattern={d.eval_pattern!r} ({len(held_out)})")
    return train, held_out
  params = dict(d.synthetic.to_dict(), image_size=config.model.image_size)
  tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
  root = d.directory or os.path.join(os.path.expanduser("~"), ".cache", "synclipmae_jax")
  paths = synthetic_dataset.ensure_synthetic_dataset(os.path.join(root, f"synthetic-{tag}"), **params)
  return paths["train"], paths["validation"]


def check_finite(step: int, metrics: dict) -> None:
  for name, value in metrics.items():
    if (name.startswith("loss/") or name == "grad_norm") and not np.isfinite(value):
      term = name.removeprefix("loss/")
      raise NonFiniteLossError(
          f"non-finite {term} ({value}) at step {step}; stopping without checkpointing this state")


def stop_requested_anywhere(local: bool) -> bool:
  """Whether any process got SIGTERM. Signals reach the hosts of a pod one by one, and saving
  a checkpoint is collective, so every process must agree on the step it stops at."""
  if jax.process_count() == 1:
    return local
  return bool(multihost_utils.process_allgather(np.int32(local)).max())


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the last metrics."""
  config_schema.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})

  # ---------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  logging.info("mesh %s over %d devices", dict(mesh.shape), jax.device_count())
  batch_shards = sharding.num_batch_shards(mesh)
  b, t = config.data.global_batch_size, config.data.window_frames

  # ---------------------------------------------------------------- input
  train_paths, eval_paths = dataset_paths(config)
  train_ds = grain_pipeline.make_train_dataset(
      train_paths, global_batch_size=b, window_frames=t, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      horizontal_flip=config.data.horizontal_flip)
  train_iter = grain_pipeline.make_train_iterator(
      train_ds, worker_count=config.data.worker_count,
      worker_buffer_size=config.data.worker_buffer_size)
  held_out = grain_pipeline.load_eval_clips(eval_paths, max_clips=config.eval.num_clips)

  # ---------------------------------------------------------------- model
  model = synclipmae.build(config.model)
  audio_encoder = audio_encoder_lib.build(config.model.audio)
  tx, schedule = optimizer.make(config.optim, config.num_train_steps)
  fns = train_state.make(config, model, audio_encoder, tx, schedule, batch_shards)

  # ---------------------------------------------------------------- sharding, init & step
  init_rng = jax.random.PRNGKey(config.seed)
  abstract_state, init_fn, train_step, visual_step = train_state.jit_all(fns, mesh, rules, init_rng)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  num_frozen = sum(x.size for x in jax.tree.leaves(abstract_state.frozen))
  logging.info("trainable parameters: %d, frozen audio encoder parameters: %d", num_params, num_frozen)
  audio_features = jax.eval_shape(lambda frozen, audio: audio_encoder.apply(
      {"params": frozen}, audio, t), abstract_state.frozen, fns.dummy_batch["audio"])
  step_flops = flops.train_step_flops(
      config, audio_features.shape[-1], audio_features.shape[-2],
      audio_encoder.wav2vec2_config if config.model.audio.frontend == "wav2vec2" else None)

  # ---------------------------------------------------------------- checkpoint
  manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"), item_names=("state", "iter"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints, enable_async_checkpointing=True))
  if manager.latest_step() is not None:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        iter=grain.checkpoint.CheckpointRestore(train_iter)))
    state = restored.state
    logging.info("resumed from step %d", int(state.step))
  else:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state = init_fn(init_rng)
    if any(config.model.init.values()):  # pretrained initialisation of a fresh run only
      state, reports = weights.load_into_state(config, state, abstract_state)
      for report in reports:
        logging.info("%s", report.format())

  def save(step):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), iter=grain.checkpoint.CheckpointSave(train_iter)),
        force=True)

  # ---------------------------------------------------------------- evaluators
  evaluator = evaluation.SyncEvaluator(config.eval, config.model, config.masking, model,
                                       audio_encoder, held_out)

  def run_eval(step):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      metrics = evaluator.run(state.params, state.frozen)
    writer.write_scalars(step, metrics)
    return metrics

  # ---------------------------------------------------------------- train loop
  hooks = [periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)]
  if jax.process_index() == 0 and config.profile_steps:
    hooks.append(periodic_actions.Profile(num_profile_steps=config.profile_steps, logdir=workdir))
  step = int(state.step)
  first_step = step
  sums, count, last = {}, 0, {}
  timed_steps, timed_seconds = 0, 0.0  # input + step time, without the compiling first step
  # SIGTERM (preemption, `kill`) on any process: every process finishes the current step,
  # saves, exits cleanly.
  stop_requested = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
  loop_start = time.time()
  try:
    while step < config.num_train_steps:
      step_start = time.time()
      batch = sharding.global_batch(next(train_iter), mesh)
      with jax.profiler.StepTraceAnnotation("train", step_num=step), \
          jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, device_metrics = train_step(state, batch)
      step += 1
      metrics = jax.device_get(device_metrics)
      check_finite(step, metrics)
      if step > first_step + 1:
        timed_steps, timed_seconds = timed_steps + 1, timed_seconds + time.time() - step_start
      for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v)
      count += 1
      for hook in hooks:
        hook(step)
      final = step == config.num_train_steps
      if step % config.log_every_steps == 0 or final:
        last = {k: v / count for k, v in sums.items()}
        if timed_steps:
          last["perf/clips_per_sec"] = timed_steps * b / timed_seconds
          last["perf/model_tflops_per_sec"] = timed_steps * step_flops / timed_seconds / 1e12
        last["perf/model_tflops_per_step"] = step_flops / 1e12
        writer.write_scalars(step, last)
        sums, count, timed_steps, timed_seconds = {}, 0, 0, 0.0
      if step % config.image_every_steps == 0 or final:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
          vis = jax.device_get(visual_step(state, batch))
        image = visualize.reconstruction_grid(
            vis["targets"], vis["context_keep"], vis["pred_video"], vis["pred_audio"],
            patch=config.model.patch_size, grid=config.model.image_size // config.model.patch_size,
            norm_pix=config.loss.norm_pix)
        writer.write_images(step, {"reconstructions": image[None]})
      if step % config.eval_every_steps == 0 or final:
        last.update(run_eval(step))
      if stop_requested_anywhere(bool(stop_requested)):
        preempted = "SIGTERM on " + ("this process" if stop_requested else "another process")
      elif manager.reached_preemption(step):
        preempted = "preemption notice"
      else:
        preempted = ""
      if step % config.checkpoint_every_steps == 0 or final or preempted:
        save(step)
      if preempted:
        logging.warning("%s: stopped at step %d, checkpoint saved", preempted, step)
        break
    if step == first_step and step >= config.num_train_steps:
      last = run_eval(step)
  finally:
    manager.wait_until_finished()
    manager.close()
    signal.signal(signal.SIGTERM, previous_handler)
    writer.flush()
  if jax.process_index() == 0 and last:
    # Wall time of this run's loop: steps, periodic evaluation, images and checkpoints.
    last["perf/loop_seconds"] = time.time() - loop_start
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump({"step": step, **{k: float(v) for k, v in last.items()}}, f, indent=1, sort_keys=True)
  return last

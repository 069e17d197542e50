"""What the pair-model tasks share (UniSync, `tasks/unisync/`; SyncNet, `tasks/syncnet/`): a
model of a video window and an audio window trained on Figure 3's samples (`pairs.py`) cut
from the pretraining pipeline's windows, with the pretraining run's frozen audio front end; its
checks, its step and its experiment. A task module takes its input, warnings and evaluator inputs
from here and adds its model, its loss and its own checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from synclipmae_jax import config_validation, experiment, optimizer, sharding, train_state
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.tasks import pretrain
from synclipmae_jax.tasks.pair_sync import pairs

make_input = pretrain.make_input
init_warnings = pretrain.init_warnings


def pair_task_errors(config, *, num_devices: int, process_count: int, window: int,
                     sync_evaluator: str, name: str) -> list[str]:
  """The problems every pair-model task shares: the pretraining config's (data, audio, mesh,
  batch), the samples' window, and evals of another type than the task's sync evaluator."""
  errors = []
  try:
    config_validation.validate(config, num_devices=num_devices, process_count=process_count)
  except ValueError as e:
    errors.append(str(e))
  errors.extend(pairs.validate(config.data.window_frames, window))
  for entry_name, entry in config.evals.items():
    if entry.get("type") != sync_evaluator:
      errors.append(f"evals.{entry_name}.type={entry.get('type')!r}: a {name} run is evaluated by "
                    f"{sync_evaluator!r} only")
  return errors


def embed_samples(model, params, samples) -> tuple[jax.Array, jax.Array]:
  """The video windows' embeddings [B, D] and their audio candidates' [B, 1 + N, D] (the positive
  first, then the negatives in `pairs.KINDS` order) of a pair model (UniSync, SyncNet)."""
  b = samples["frames"].shape[0]
  video = model.apply({"params": params}, samples["frames"], method=model.embed_video)
  audio = model.apply({"params": params},
                      jnp.concatenate([samples["positive"][:, None], samples["negatives"]], 1)
                      .reshape((-1,) + samples["positive"].shape[1:]), method=model.embed_audio)
  return video, audio.reshape(b, -1, audio.shape[-1])


def step_functions(config, model, audio_encoder, tx, schedule, loss_fn) -> train_state.StepFunctions:
  """The pure init and train step of a pair model on the pretraining batch
  (`train_state.dummy_batch`): Figure 3's samples cut from each batch, `loss_fn(params, samples)`."""
  spec = train_state.dummy_batch(config)
  t, k = config.data.window_frames, model.window
  base_key = jax.random.PRNGKey(config.seed + 1)

  def init(rng):
    dummy = {name: jnp.zeros(v.shape, v.dtype) for name, v in spec.items()}  # traced, never kept
    k_model, k_audio = jax.random.split(rng)
    frozen = audio_encoder.init(k_audio, dummy["audio"][:1], t).get("params", {})
    features = audio_encoder.apply({"params": frozen}, dummy["audio"][:1], t)
    params = model.init(k_model, dummy["frames"][:1, :k], features[:, :k])["params"]
    return train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=tx.init(params), frozen=frozen)

  def train_step(state, batch):
    rng = jax.random.fold_in(base_key, state.step)
    features = jax.lax.stop_gradient(audio_encoder.apply({"params": state.frozen}, batch["audio"], t))
    samples = pairs.training_samples(rng, batch["frames"], features, batch["identity_id"], k)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, samples)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss/total": loss, **metrics,
               "pairs/cross_speaker": jnp.mean(samples["cross_speaker"].astype(jnp.float32)),
               "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_state.StepFunctions(init, train_step, None, spec)


def build_pair_task(config, mesh, model, make_loss) -> experiment.Experiment:
  """The experiment of a pair model trained on Figure 3's samples with `make_loss(config, model)`."""
  rules = sharding.rules(config)
  audio_encoder = audio_encoder_lib.build(config.model.audio)
  tx, schedule = optimizer.make(config.optim, config.num_train_steps)
  fns = step_functions(config, model, audio_encoder, tx, schedule, make_loss(config, model))
  abstract, init, step, _ = train_state.jit_all(fns, mesh, rules, jax.random.PRNGKey(config.seed))
  batch = train_state.abstract_batch(fns, mesh)
  return experiment.Experiment(
      config=config, mesh=mesh, rules=rules, model=model, audio_encoder=audio_encoder, tx=tx,
      schedule=schedule, group_size=config.data.global_batch_size, abstract_state=abstract,
      init=init, train_step=step, visual_step=None, abstract_batch=batch,
      step_flops=train_state.lowered_flops(step, abstract, batch, mesh, rules))


def evaluator_kwargs(exp, eval_inputs: dict) -> dict:
  return {"model": exp.model, "audio_encoder": exp.audio_encoder, **eval_inputs}


def initialize(exp, state):
  del exp
  return state

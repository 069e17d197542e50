"""The train state, its initialisation and the train step, as pure functions.

`train.py` jits these with the mesh's shardings; tests jit the same functions on other
meshes (sharded == unsharded) without going through the training loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines.schema import SAMPLES_PER_FRAME
from synclipmae_jax import objective, sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # trainable
  opt_state: Any
  frozen: Any  # the frozen audio encoder's parameters: no gradient, no optimizer state


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """What a training run needs, built from the config: all pure functions."""

  init: Callable  # rng -> boxed TrainState (use nn.unbox)
  train_step: Callable  # (state, batch) -> (state, metrics)
  visual_step: Callable | None  # (state, batch) -> reconstructions of the first clip; None: none
  dummy_batch: dict  # jax.ShapeDtypeStruct of every field of one global batch


def dummy_batch(config) -> dict:
  """Shapes and dtypes of one global batch: abstract, so nothing is allocated (6144 clips of
  the pretraining config are 7.4 GB of frames)."""
  b, t, s = config.data.global_batch_size, config.data.window_frames, config.model.image_size
  audio_frames = t + 2 * config.model.audio.input_context_frames  # the window and its context
  return {"frames": jax.ShapeDtypeStruct((b, t, s, s, 3), jnp.uint8),
          "audio": jax.ShapeDtypeStruct((b, audio_frames * SAMPLES_PER_FRAME), jnp.float32),
          "face_boxes": jax.ShapeDtypeStruct((b, t, 4), jnp.float32),
          "mouth_boxes": jax.ShapeDtypeStruct((b, t, 4), jnp.float32),
          "identity_id": jax.ShapeDtypeStruct((b,), jnp.int32)}


def random_batch(config, seed: int = 0, clips_per_identity: int = 1) -> dict:
  """A random host batch of `dummy_batch`'s shapes (tests, benchmarks): noise frames and audio,
  fixed face / mouth boxes, `clips_per_identity` consecutive clips per identity id."""
  spec = dummy_batch(config)
  b, t = spec["face_boxes"].shape[:2]
  rng = np.random.default_rng(seed)
  return {"frames": rng.integers(0, 256, spec["frames"].shape, dtype=np.uint8),
          "audio": rng.uniform(-0.5, 0.5, spec["audio"].shape).astype(np.float32),
          "face_boxes": np.tile(np.float32([0.2, 0.15, 0.8, 0.95]), (b, t, 1)),
          "mouth_boxes": np.tile(np.float32([0.35, 0.65, 0.65, 0.85]), (b, t, 1)),
          "identity_id": (np.arange(b) // clips_per_identity).astype(np.int32)}


def group_size(config, num_batch_shards: int) -> int:
  """Clips per contrastive group: `loss.contrastive.group_size`, or 0 = one batch shard's clips."""
  return config.loss.contrastive.group_size or config.data.global_batch_size // num_batch_shards


def make(config, model, audio_encoder, tx: optax.GradientTransformation, schedule,
         groups: int) -> StepFunctions:
  """The pure step functions; `groups` = clips per contrastive group (`group_size`)."""
  t = config.data.window_frames
  spec = dummy_batch(config)
  base_key = jax.random.PRNGKey(config.seed + 1)

  def init(rng):
    dummy = {k: jnp.zeros(v.shape, v.dtype) for k, v in spec.items()}  # traced, never kept
    k_model, k_audio, k_views = jax.random.split(rng, 3)
    frozen = audio_encoder.init(k_audio, dummy["audio"][:1], t).get("params", {})
    features = audio_encoder.apply({"params": frozen}, dummy["audio"], t)
    _, views = objective.make_views(k_views, dummy["frames"], dummy["face_boxes"],
                                    dummy["mouth_boxes"], config)
    params = model.init(k_model, *views, features, jnp.arange(dummy["audio"].shape[0] * t))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      frozen=frozen)

  def loss_and_grads(state, batch):
    rng = jax.random.fold_in(base_key, state.step)
    features = jax.lax.stop_gradient(audio_encoder.apply({"params": state.frozen}, batch["audio"], t))
    return jax.value_and_grad(objective.compute_losses, has_aux=True)(
        state.params, model, batch, features, rng, config, groups)

  def train_step(state, batch):
    (_, (metrics, _)), grads = loss_and_grads(state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def visual_step(state, batch):
    (_, (_, aux)), _ = loss_and_grads(state, batch)
    return {k: None if aux[k] is None else aux[k][:t]  # pred_audio: None without an audio pass
            for k in ("targets", "context_keep", "pred_video", "pred_audio")}

  return StepFunctions(init, train_step, visual_step, spec)


def jit_all(fns: StepFunctions, mesh, rules, rng):
  """Abstract state with shardings, and the jitted init / train / visual (None if fns has none)
  functions."""
  with sharding.scope(mesh, rules):
    boxed = jax.eval_shape(fns.init, rng)
  shardings = sharding.tree_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.unbox(boxed), shardings)
  with sharding.scope(mesh, rules):
    batch = sharding.batch_sharding(mesh)
    init = jax.jit(lambda r: nn.unbox(fns.init(r)), out_shardings=shardings)
    train_step = jax.jit(fns.train_step, in_shardings=(shardings, batch),
                         out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
    visual_step = fns.visual_step and jax.jit(fns.visual_step, in_shardings=(shardings, batch),
                                              out_shardings=sharding.replicated(mesh))
  return abstract, init, train_step, visual_step


def abstract_batch(fns: StepFunctions, mesh) -> dict:
  """fns' global batch as ShapeDtypeStructs with the batch sharding (for lowering the step)."""
  batch_sharding = sharding.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
          for k, v in fns.dummy_batch.items()}


def lowered_flops(train_step, abstract_state, batch, mesh, rules) -> float:
  """XLA's FLOP count of the lowered (not compiled) train step; 0 when it gives none."""
  with sharding.scope(mesh, rules):
    cost = train_step.lower(abstract_state, batch).cost_analysis() or {}
  return float(cost.get("flops", 0.0))

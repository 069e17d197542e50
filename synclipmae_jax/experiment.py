"""One experiment builder: a config and a mesh -> everything a run or a tool needs.

Training (`train.py`), the AOT tool, the benchmarks, the tests and the downstream tools
all call `build`; nothing else repeats the chain model -> audio encoder -> optimizer ->
step functions -> abstract state with shardings -> FLOPs per step. Nothing is allocated:
the state exists as shapes (`jax.eval_shape`) until `init` is called.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.sharding import Mesh

from synclipmae_jax import flops, optimizer, sharding, train_state
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import synclipmae


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The model, its frozen audio front end, the optimizer and the jitted step functions."""

  config: Any
  mesh: Mesh
  rules: tuple
  model: synclipmae.SyncLipMAE
  audio_encoder: audio_encoder_lib.AudioEncoder
  tx: Any  # optax.GradientTransformation
  schedule: Callable  # step -> learning rate
  group_size: int  # clips per contrastive group (`train_state.group_size`)
  abstract_state: train_state.TrainState  # ShapeDtypeStructs with their shardings
  init: Callable  # jitted: rng -> TrainState
  train_step: Callable  # jitted: (state, batch) -> (state, metrics)
  visual_step: Callable  # jitted: (state, batch) -> reconstructions of the first clip
  abstract_batch: dict  # ShapeDtypeStructs of one global batch, with the batch sharding
  step_flops: float  # analytical FLOPs of one train step (`flops.train_step_flops`)

  def scope(self):
    """The mesh and logical-axis rules under which the jitted functions run."""
    return sharding.scope(self.mesh, self.rules)

  @property
  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.abstract_state.params))

  @property
  def num_frozen(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.abstract_state.frozen))


def audio_feature_shape(audio_encoder, frozen, num_frames: int) -> tuple[int, int]:
  """(L, C) of the frozen encoder's per-frame features, from shapes only."""
  waveform = jax.ShapeDtypeStruct((1, audio_encoder.window_samples(num_frames)), "float32")
  features = jax.eval_shape(lambda f, a: audio_encoder.apply({"params": f}, a, num_frames),
                            frozen, waveform)
  return tuple(features.shape[-2:])


def build(config, mesh: Mesh) -> Experiment:
  """Builds the experiment of `config` on `mesh` (validate the config first)."""
  rules = sharding.rules(config)
  model = synclipmae.build(config.model)
  audio_encoder = audio_encoder_lib.build(config.model.audio)
  tx, schedule = optimizer.make(config.optim, config.num_train_steps)
  groups = train_state.group_size(config, sharding.num_batch_shards(mesh))
  fns = train_state.make(config, model, audio_encoder, tx, schedule, groups)
  abstract, init, step, visual_step = train_state.jit_all(
      fns, mesh, rules, jax.random.PRNGKey(config.seed))
  batch = train_state.abstract_batch(fns, mesh)
  step_flops = flops.train_step_flops(
      config, group_size=groups, audio_encoder=audio_encoder,
      audio_features=audio_feature_shape(audio_encoder, abstract.frozen, config.data.window_frames))
  return Experiment(config=config, mesh=mesh, rules=rules, model=model,
                    audio_encoder=audio_encoder, tx=tx, schedule=schedule, group_size=groups,
                    abstract_state=abstract, init=init, train_step=step,
                    visual_step=visual_step, abstract_batch=batch, step_flops=step_flops)

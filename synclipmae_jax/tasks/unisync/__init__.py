"""UniSync, the supervised sync baseline, as a task of `train.py` (see `tasks/__init__.py`):
`models/unisync.py` trained with `losses.py` here on Figure 3's samples (`tasks/pair_sync/pairs.py`)
cut from the pretraining pipeline's windows, with the pretraining run's frozen audio front end
(what pair models share: `tasks/pair_sync/`).

The data, the audio front end, the mesh and the optimizer are the pretraining config's (the
config extends it: `configs/unisync.py`), so UniSync sees the same clips, the same audio features
and the same budget as the SyncLipMAE run it is compared with.
"""

from __future__ import annotations

import jax.numpy as jnp

from synclipmae_jax import experiment
from synclipmae_jax.models import unisync as unisync_model
from synclipmae_jax.tasks import pair_sync
from synclipmae_jax.tasks.pair_sync import pairs
from synclipmae_jax.tasks.unisync import losses as unisync_losses

make_input = pair_sync.make_input
init_warnings = pair_sync.init_warnings
write_images = None
evaluator_kwargs = pair_sync.evaluator_kwargs
initialize = pair_sync.initialize
SYNC_EVALUATOR = "unisync_sync"  # the evaluator type of the sync tools' protocol on this task's runs


def validate(config, *, num_devices: int, process_count: int) -> None:
  """The pretraining config's checks (data, audio, mesh, batch) and UniSync's own."""
  u = config.model.unisync
  errors = pair_sync.pair_task_errors(config, num_devices=num_devices,
                                      process_count=process_count, window=u.window,
                                      sync_evaluator=SYNC_EVALUATOR, name="UniSync")
  if u.margin < 0:
    errors.append(f"model.unisync.margin={u.margin} must be >= 0")
  if min(min(u.channels), u.audio_width, u.hidden, u.embed_dim) < 1:
    errors.append("model.unisync.channels, audio_width, hidden and embed_dim must be >= 1")
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def build_model(config) -> unisync_model.UniSync:
  u = config.model.unisync
  return unisync_model.UniSync(window=u.window, channels=tuple(u.channels),
                               audio_width=u.audio_width, hidden=u.hidden, embed_dim=u.embed_dim)


def pair_loss(config, model):
  """(params, samples) -> (loss, metrics): p_sync of every candidate and `unisync_losses`."""
  margin = config.model.unisync.margin

  def loss_fn(params, samples):
    video, audio = pair_sync.embed_samples(model, params, samples)
    p = unisync_model.sync_probability(audio, video[:, None])
    loss, metrics = unisync_losses.unisync_loss(p[:, 0], p[:, 1:], margin)
    for i, kind in enumerate(pairs.KINDS):
      metrics[f"unisync/p_{kind}"] = jnp.mean(p[:, 1 + i])
    metrics["unisync/p_positive"] = jnp.mean(p[:, 0])
    return loss, metrics

  return loss_fn


def build(config, mesh) -> experiment.Experiment:
  return pair_sync.build_pair_task(config, mesh, build_model(config), pair_loss)


def summary(config, exp, log_path: str) -> str:
  u = config.model.unisync
  return (f"UniSync: windows of {u.window} frames, convolutions {tuple(u.channels)}, embeddings "
          f"{u.embed_dim}, margin {u.margin}, {exp.num_params / 1e6:.2f}M trainable; audio "
          f"{config.model.audio.frontend} (frozen)\n"
          f"{config.data.global_batch_size} clips x {config.data.window_frames} frames per step, "
          f"{config.num_train_steps} steps, mesh {dict(exp.mesh.shape)}; log: {log_path}")

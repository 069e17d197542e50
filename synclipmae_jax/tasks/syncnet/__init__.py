"""SyncNet trained by us, as a task of `train.py` (see `tasks/__init__.py`): `models/syncnet.py`
trained with SyncNet's contrastive loss (`losses.py` here) on the samples UniSync trains on
(`tasks/pair_sync/pairs.py`, cut from the pretraining pipeline's windows), with the pretraining
run's frozen audio front end; evaluated by the sync protocol on Euclidean distances
(`evaluators/syncnet_sync.py`: the LSE-D / LSE-C arithmetic of the public SyncNet code, on our
held-out clips).

Everything else (data, mesh, optimizer, budget) is the pretraining config's, as for UniSync
(`configs/syncnet.py` extends the demo), so the three rows of the sync table see the same clips.
"""

from __future__ import annotations

import jax.numpy as jnp

from synclipmae_jax import experiment
from synclipmae_jax.models import syncnet as syncnet_model
from synclipmae_jax.tasks import pair_sync
from synclipmae_jax.tasks.pair_sync import pairs
from synclipmae_jax.tasks.syncnet import losses as syncnet_losses

make_input = pair_sync.make_input
init_warnings = pair_sync.init_warnings
write_images = None
evaluator_kwargs = pair_sync.evaluator_kwargs
initialize = pair_sync.initialize
SYNC_EVALUATOR = "syncnet_sync"  # the evaluator type of the sync tools' protocol on this task's runs


def validate(config, *, num_devices: int, process_count: int) -> None:
  """The checks of every pair-model task (`pair_sync.pair_task_errors`) and SyncNet's own."""
  s = config.model.syncnet
  errors = pair_sync.pair_task_errors(config, num_devices=num_devices,
                                      process_count=process_count, window=s.window,
                                      sync_evaluator=SYNC_EVALUATOR, name="SyncNet")
  if s.margin <= 0:
    errors.append(f"model.syncnet.margin={s.margin} must be > 0")
  if min(min(s.channels), min(s.audio_channels), s.hidden, s.embed_dim) < 1:
    errors.append("model.syncnet.channels, audio_channels, hidden and embed_dim must be >= 1")
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def build_model(config) -> syncnet_model.SyncNet:
  s = config.model.syncnet
  return syncnet_model.SyncNet(window=s.window, channels=tuple(s.channels),
                               audio_channels=tuple(s.audio_channels), hidden=s.hidden,
                               embed_dim=s.embed_dim)


def pair_loss(config, model):
  """(params, samples) -> (loss, metrics): the distance of every candidate and
  `syncnet_losses.contrastive_loss`."""
  margin = config.model.syncnet.margin

  def loss_fn(params, samples):
    video, audio = pair_sync.embed_samples(model, params, samples)
    d = syncnet_model.distance(audio, video[:, None])
    loss, metrics = syncnet_losses.contrastive_loss(d[:, 0], d[:, 1:], margin)
    for i, kind in enumerate(pairs.KINDS):
      metrics[f"syncnet/d_{kind}"] = jnp.mean(d[:, 1 + i])
    return loss, metrics

  return loss_fn


def build(config, mesh) -> experiment.Experiment:
  return pair_sync.build_pair_task(config, mesh, build_model(config), pair_loss)


def summary(config, exp, log_path: str) -> str:
  s = config.model.syncnet
  return (f"SyncNet: windows of {s.window} frames, lip convolutions {tuple(s.channels)}, audio "
          f"convolutions {tuple(s.audio_channels)}, embeddings {s.embed_dim}, margin {s.margin}, "
          f"{exp.num_params / 1e6:.2f}M trainable; audio {config.model.audio.frontend} (frozen)\n"
          f"{config.data.global_batch_size} clips x {config.data.window_frames} frames per step, "
          f"{config.num_train_steps} steps, mesh {dict(exp.mesh.shape)}; log: {log_path}")

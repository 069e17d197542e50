"""The pretraining objective (paper 3.3): views, forward pass and every loss term.

`compute_losses` is the pure function the train step differentiates. Randomness (the two
masks, photometric jitter, identity shuffle) is drawn here from one key, so a step is a
function of (params, batch, key) only.

Contrastive groups: the global batch of B clips is split into B / G groups of G clips
(`config.loss.contrastive.group_size`, default the per-device batch); InfoNCE contrasts all
G * T frames of a group with each other, so the logits cost B * G * T^2, not (B * T)^2, and
a group never spans two devices of the batch sharding. Identity shuffling uses the same
groups. With `loss.contrastive.negatives = "global"` InfoNCE instead contrasts each device's
frames with the frames of the whole global batch (`contrastive_over_batch`); identity shuffling
keeps the groups.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import face_weights
from synclipmae_jax import losses, masking, photometric, prompt_shuffle

MASKING_MODES = ("two_bypass", "uniform_only", "face_only")
PIXEL_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
PIXEL_STD = np.array([0.229, 0.224, 0.225], np.float32)
LOSS_TERMS = ("recon_video", "recon_audio", "contrastive", "decorrelation")
RECON_TARGETS = ("masked", "all")  # loss.recon_on: reconstruct the masked patches or all
# loss.contrastive.negatives: InfoNCE candidates from the anchor's contrastive group, or from the
# whole global batch (paper 3.3's "CLIP-style" alignment over the batch).
NEGATIVES = ("group", "global")


def contrastive_negatives(contrastive_config) -> str:
  """`loss.contrastive.negatives`; "group" for the config of a workdir trained before the
  option existed (its runs contrasted within groups)."""
  return contrastive_config.get("negatives", "group")


def contrastive_over_batch(audio, vocal, features, **infonce):
  """InfoNCE over the whole global batch (`losses.batch_infonce`): audio, vocal [B, T, D] and
  features [B, T, F] split over the mesh's batch axes (the logical `batch` rule) run under
  `jax.shard_map`, each shard's anchors against every shard's candidates; without a mesh (or
  with an unsharded batch) the arrays are the whole batch on one device."""
  mesh = jax.sharding.get_abstract_mesh()
  axes = None if mesh.empty else nn.logical_to_mesh_axes(("batch",))[0]
  if axes is None:
    return losses.batch_infonce(audio, vocal, features, axis_name=None, **infonce)
  spec = jax.sharding.PartitionSpec(axes)
  return jax.shard_map(functools.partial(losses.batch_infonce, axis_name=axes, **infonce),
                       mesh=mesh, in_specs=(spec, spec, spec),
                       out_specs=jax.sharding.PartitionSpec())(audio, vocal, features)


def frames_to_unit(frames: jax.Array) -> jax.Array:
  """uint8 [..., H, W, 3] -> float32 in [0, 1], flattened to [F, H, W, 3]."""
  return frames.reshape((-1,) + frames.shape[-3:]).astype(jnp.float32) / 255.0


def images_to_patches(images01: jax.Array, patch: int) -> jax.Array:
  """[F, H, W, 3] in [0, 1] -> the encoder's input: ImageNet-normalised patches [F, N, P]."""
  return masking.patchify((images01 - PIXEL_MEAN) / PIXEL_STD, patch)


def make_views(rng, frames, face_boxes, mouth_boxes, config):
  """Two-bypass face-aware masking (paper 3.2).

  Returns (targets, views): the clean frames' patches [F, N, P] that both decoding passes
  reconstruct, and the model's inputs (context_patches [F, N, P], context_keep [F, k],
  motion_patches or None, motion_keep or None). In `two_bypass` mode bypass 1 is uniform and
  bypass 2 face-weighted (and jittered when `masking.photometric`); `uniform_only` (A1) keeps
  bypass 1 alone and `face_only` (A2) bypass 2 alone, jitter included when
  `masking.photometric`: its one view then gives the decoder jittered context and the prompts.
  """
  m, p = config.masking, config.model.patch_size
  grid = config.model.image_size // p
  n = grid * grid
  k = masking.num_visible(n, m.mask_ratio)
  images = frames_to_unit(frames)
  f = images.shape[0]
  weights = face_weights.patch_weights(face_boxes.reshape(f, 4), mouth_boxes.reshape(f, 4), grid,
                                       **m.face_weights, xp=jnp)
  k_uniform, k_face, k_jitter = jax.random.split(rng, 3)
  targets = images_to_patches(images, p)
  if m.mode == "uniform_only":
    return targets, (targets, masking.uniform_keep(k_uniform, f, n, k), None, None)
  face_view = targets
  if m.photometric:
    face_view = images_to_patches(photometric.jitter(k_jitter, images, **m.jitter), p)
  face_keep = masking.weighted_keep(k_face, weights, k)
  if m.mode == "face_only":
    return targets, (face_view, face_keep, None, None)
  return targets, (targets, masking.uniform_keep(k_uniform, f, n, k), face_view, face_keep)


def identity_permutation(rng, identity_ids, frames_per_clip: int, group_size: int):
  """Identity-consistent prompt shuffling (paper 3.2) within contrastive groups.

  identity_ids [B] -> [B * T] frame permutation that only swaps frames of the same identity inside
  a group of `group_size` clips, taking partners from other clips of the identity where the group
  has them (`prompt_shuffle.identity_swap`).
  """
  b = identity_ids.shape[0]
  per_group = group_size * frames_per_clip
  ids = jnp.repeat(identity_ids, frames_per_clip).reshape(b // group_size, per_group)
  clips = jnp.repeat(jnp.arange(group_size), frames_per_clip)
  keys = jax.random.split(rng, b // group_size)
  perm = jax.vmap(lambda key, g: prompt_shuffle.identity_swap(key, g, clips))(keys, ids)
  offsets = (jnp.arange(b // group_size) * per_group)[:, None]
  return (perm + offsets).reshape(-1)


def cross_clip_fraction(permutation, frames_per_clip: int):
  """The fraction of frames whose identity prompt comes from another batch entry: another clip, or
  for a speaker with fewer clips than `data.clips_per_identity` another window of the same clip
  (a training metric)."""
  clip = jnp.arange(permutation.shape[0]) // frames_per_clip
  return jnp.mean((clip[permutation] != clip).astype(jnp.float32))


def compute_losses(params, model, batch, audio_features, rng, config, group_size: int):
  """Returns (total loss, metrics dict with every computed term, model outputs).

  A term of weight 0 (`config.loss.weights`) other than the video reconstruction is not computed,
  nor is what only serves it (the audio-driven decoder pass for recon_audio), and it is not logged:
  an ablation does the work of the model it describes.

  batch: `frames` uint8 [B, T, H, W, 3], `face_boxes` / `mouth_boxes` [B, T, 4],
  `identity_id` [B]; audio_features [B, T, L, C] from the frozen encoder (no gradient).
  """
  b, t = batch["frames"].shape[:2]
  k_views, k_shuffle = jax.random.split(rng)
  targets, views = make_views(k_views, batch["frames"], batch["face_boxes"], batch["mouth_boxes"],
                              config)
  _, context_keep, _, _ = views
  if config.loss.identity_shuffle:
    perm = identity_permutation(k_shuffle, batch["identity_id"], t, group_size)
  else:
    perm = jnp.arange(b * t)
  lc = config.loss
  w = lc.weights
  out = model.apply({"params": params}, *views, audio_features, perm,
                    audio_pass=bool(w.recon_audio))

  n = targets.shape[1]
  if lc.recon_on == "masked":
    recon_weight = 1.0 - masking.keep_to_mask(context_keep, n).astype(jnp.float32)
  else:
    recon_weight = jnp.ones((b * t, n), jnp.float32)
  terms = {"recon_video": losses.reconstruction_mse(out["pred_video"], targets, recon_weight,
                                                    norm_pix=lc.norm_pix)}
  metrics = {}
  if w.recon_audio:
    terms["recon_audio"] = losses.reconstruction_mse(out["pred_audio"], targets, recon_weight,
                                                     norm_pix=lc.norm_pix)
  if w.contrastive:

    def grouped(x):  # [B*T, ...] -> [B/G, G, T, ...], one group per batch shard
      x = x.reshape((b // group_size, group_size, t) + x.shape[1:])
      return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))

    c = lc.contrastive
    features = audio_features.reshape(b * t, -1)
    infonce = dict(temperature=c.temperature, neighbor_delta=c.neighbor_delta,
                   similarity_threshold=c.similarity_threshold)
    if contrastive_negatives(c) == "global":
      contrastive, cmetrics = contrastive_over_batch(
          *(x.reshape((b, t) + x.shape[1:]) for x in (out["audio"], out["vocal"], features)),
          **infonce)
    else:
      contrastive, cmetrics = jax.vmap(lambda a, v, s: losses.multi_positive_infonce(
          a, v, s, **infonce))(grouped(out["audio"]), grouped(out["vocal"]), grouped(features))
    terms["contrastive"] = contrastive.mean()
    metrics.update({f"contrastive/{k}": v.mean() for k, v in cmetrics.items()})
  if w.decorrelation:
    terms["decorrelation"] = losses.cross_covariance_penalty(
        [out["identity"], out["vocal"], out["ambient"]])
  total = sum(w[name] * value for name, value in terms.items())
  metrics.update({f"loss/{name}": value for name, value in terms.items()})
  metrics["loss/total"] = total
  metrics["shuffle/cross_clip_fraction"] = cross_clip_fraction(perm, t)
  aux = {"context_keep": context_keep, "targets": targets, **out}
  return total, (metrics, aux)

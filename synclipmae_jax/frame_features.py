"""Per-frame features of a frozen SyncLipMAE encoder for the downstream heads (paper 4.2-4.3):
every frame encoded with all patches visible, its three prompt tokens and its mean patch token.

`frame_features_fn(model)` is module-level and cached (one jitted function per model); `extract`
runs it over the frames of many clips in calls of a fixed size (the last one padded), so one
compilation serves any number of clips.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from synclipmae_jax import objective
from synclipmae_jax.models import layers

PARTS = ("identity", "vocal", "ambient", "patch_mean")  # the rows of frame_features_fn's output


@functools.cache
def frame_features_fn(model):
  """Jitted (params, frames uint8 [F, H, W, 3]) -> [F, 4, D] float32: the PARTS of each frame
  (identity, vocal-motion and ambient-motion prompt tokens, mean patch token), all patches
  visible."""
  n = model.grid * model.grid

  @jax.jit
  def features(params, frames):
    patches = objective.images_to_patches(objective.frames_to_unit(frames), model.patch_size)
    keep = jnp.broadcast_to(jnp.arange(n), (patches.shape[0], n))
    tokens, prompts = model.apply({"params": params}, patches, keep, method=model.encode)
    out = jnp.concatenate([prompts, tokens.mean(1, keepdims=True)], axis=1)
    return layers.constrain(out.astype(jnp.float32), None, None, None)

  return features


def extract(fn, params, clips: list[dict], frames_per_call: int) -> list[np.ndarray]:
  """Per clip (a dict with uint8 `frames` [N, H, W, 3]), fn's features [N, 4, D] of its frames,
  computed frames_per_call at a time."""
  if not clips:
    return []
  frames = np.concatenate([c["frames"] for c in clips])
  parts = []
  for s in range(0, len(frames), frames_per_call):
    chunk = frames[s:s + frames_per_call]
    padded = np.concatenate([chunk, np.zeros((frames_per_call - len(chunk),) + chunk.shape[1:], chunk.dtype)])
    parts.append(np.asarray(fn(params, padded))[:len(chunk)])
  return np.split(np.concatenate(parts), np.cumsum([len(c["frames"]) for c in clips])[:-1])

"""The sync evaluation of UniSync (tasks/unisync/): `evaluators/sync.py`'s protocol (the same
held-out clips, trials, lag sweep for K in `windows`, R-precision) on UniSync's per-frame
embeddings, so that the baseline and SyncLipMAE are scored by one piece of code.

Frame t's video embedding is v' of the K frames centred on t (indices clamped to the clip: the
first and last frames repeat), its audio embedding a' of the frozen audio features of the same K
frames (computed in training's windows with their audio context, `Evaluator.sliding_audio`; zeros
beyond the clip's audio). Both are rectified, so the cosine the metrics take is p_sync
(`models.unisync.sync_probability`). Options: those of the sync evaluator (`view` is unused).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from synclipmae_jax.evaluators import sync
from synclipmae_jax.models import layers

validate = sync.validate


@functools.cache
def embedding_fn(model, stream: str, rectify: bool = True):
  """Jitted (params, windows) -> the embedding [F, D] of a pair model's `stream`: "video"
  (frames uint8 [F, K, H, W, 3] -> v') or "audio" (features [F, K, L, C] -> a'); rectified
  (ReLU, as UniSync's p_sync reads them) when `rectify`."""

  @jax.jit
  def embed(params, windows):
    out = model.apply({"params": params}, windows, method=f"embed_{stream}")
    out = jax.nn.relu(out) if rectify else out
    return layers.constrain(out, None, None)

  return embed


@functools.cache
def audio_features_fn(audio_encoder, num_frames: int):
  """Jitted (frozen, waveforms [W, samples]) -> the frozen features [W, num_frames, L, C]."""
  return jax.jit(lambda frozen, waves: audio_encoder.apply({"params": frozen}, waves, num_frames))


def centred_windows(num_frames: int, k: int) -> np.ndarray:
  """[N, K] frame indices of the K-frame window centred on each frame, clamped to [0, N)."""
  return np.clip(np.arange(num_frames)[:, None] + np.arange(k)[None, :] - k // 2, 0, num_frames - 1)


class Evaluator(sync.Evaluator):
  """`sync.Evaluator` with UniSync's embeddings as the video and audio tokens (any model with
  `window`, `embed_video` and `embed_audio`; RECTIFY: whether the embeddings are rectified)."""

  RECTIFY = True

  def __init__(self, entry, config, *, model, audio_encoder, eval_paths: list[str]):
    self.load(entry, config, model, audio_encoder, eval_paths)
    self.video_fn = embedding_fn(model, "video", self.RECTIFY)
    self.audio_fn = embedding_fn(model, "audio", self.RECTIFY)
    self.features_fn = audio_features_fn(audio_encoder, self.window_frames)

  def _embed(self, fn, params, windows: np.ndarray) -> np.ndarray:
    step = self.c.frames_per_call
    return np.concatenate([np.asarray(fn(params, windows[i:i + step]))
                           for i in range(0, len(windows), step)])

  def clip_tokens(self, params, clip: dict) -> tuple[np.ndarray, None]:
    frames = np.asarray(clip["frames"])
    return self._embed(self.video_fn, params, frames[centred_windows(len(frames), self.model.window)]), None

  def audio_tokens(self, params, frozen, clip: dict, start: int, stop: int) -> np.ndarray:
    k = self.model.window
    half = k // 2
    features = self.sliding_audio(lambda waves: self.features_fn(frozen, waves), clip,
                                  start - half, stop + k - 1 - half)  # [stop - start + K - 1, L, C]
    windows = np.arange(stop - start)[:, None] + np.arange(k)[None, :]
    return self._embed(self.audio_fn, params, features[windows])

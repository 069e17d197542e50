"""Audio-visual sync evaluation on held-out clips (paper 4.1 and 5).

For each held-out clip of N frames the audio is shifted by a known lag L, drawn uniformly
from [-eval.max_true_lag, eval.max_true_lag] (positive: the video lags the audio, so audio
frame t belongs with video frame t + L): the audio window is frames [S + L, N - S + L)
with S = `eval.max_lag`, and the video tokens of all N frames give every candidate lag in
[-S, S] a real frame on every audio frame. The waveform itself is cut at the shifted
position, so the audio encoder sees the shifted stream. Vocal-motion tokens and audio
tokens go to `sync_metrics.lag_detection` (Acc and Offset for windows of K frames) and,
unshifted, to `sync_metrics.r_precision` (pool of 32). All tokens are the frozen model's;
no extra head is trained.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from synclipmae_jax import masking, objective, sync_metrics
from synclipmae_jax.models import layers, synclipmae

SAMPLES_PER_FRAME = 640


class SyncEvaluator:
  """Holds the held-out clips and the jitted token functions; `run(params, frozen)` -> metrics."""

  def __init__(self, eval_config, model_config, masking_config, model: synclipmae.SyncLipMAE,
               audio_encoder, clips: list[dict]):
    self.c = eval_config
    self.model = model
    self.audio_encoder = audio_encoder
    self.patch = model_config.patch_size
    self.grid = model_config.image_size // self.patch
    self.k = masking.num_visible(self.grid * self.grid, masking_config.mask_ratio)
    self.face_weights = dict(masking_config.face_weights)
    self.clips = clips[: self.c.num_clips]
    if len(self.clips) < self.c.num_clips:
      raise ValueError(f"eval.num_clips={self.c.num_clips} but only {len(clips)} held-out clips")
    m = self.c.max_true_lag
    rng = np.random.default_rng(self.c.seed)
    self.trials = [(i, int(rng.integers(-m, m + 1))) for i in range(len(self.clips))
                   for _ in range(self.c.trials_per_clip)]

  @functools.partial(jax.jit, static_argnums=0)
  def _vocal_tokens(self, params, frames, face_boxes, mouth_boxes):
    images = objective.frames_to_unit(frames)
    patches = masking.patchify(objective.normalize_pixels(images), self.patch)
    f, n = patches.shape[:2]
    if self.c.view == "full":
      keep = jnp.broadcast_to(jnp.arange(n), (f, n))
    else:
      weights = masking.face_weights(face_boxes, mouth_boxes, self.grid, **self.face_weights)
      keep = masking.top_weight_keep(weights, self.k)
    _, prompts = self.model.apply({"params": params}, patches, keep, method=self.model.encode)
    return layers.constrain(prompts[:, 1], None, None)  # replicated: every host reads it whole

  @functools.partial(jax.jit, static_argnums=(0, 4))
  def _audio_tokens(self, params, frozen, waveform, num_frames):
    features = self.audio_encoder.apply({"params": frozen}, waveform[None], num_frames)
    tokens = self.model.apply({"params": params}, features, method=self.model.encode_audio)[0]
    return layers.constrain(tokens, None, None)  # replicated: every host reads it whole

  def video_tokens(self, params, clip: dict, start: int, stop: int) -> np.ndarray:
    out, step = [], self.c.frames_per_call
    for s in range(start, stop, step):
      e = min(s + step, stop)
      out.append(np.asarray(self._vocal_tokens(
          params, clip["frames"][s:e], clip["face_boxes"][s:e], clip["mouth_boxes"][s:e])))
    return np.concatenate(out)

  def audio_tokens(self, params, frozen, clip: dict, start: int, stop: int) -> np.ndarray:
    wave = np.asarray(clip["audio"][start * SAMPLES_PER_FRAME: stop * SAMPLES_PER_FRAME], np.float32)
    return np.asarray(self._audio_tokens(params, frozen, wave, stop - start))

  def run(self, params, frozen) -> dict[str, float]:
    s = self.c.max_lag
    video = [self.video_tokens(params, clip, 0, len(clip["frames"])) for clip in self.clips]
    audio_trials, video_trials, lags = [], [], []
    for i, lag in self.trials:
      n = len(self.clips[i]["frames"])
      audio_trials.append(self.audio_tokens(params, frozen, self.clips[i], s + lag, n - s + lag))
      video_trials.append(video[i])
      lags.append(lag)
    results = sync_metrics.lag_detection(
        audio_trials, video_trials, lags, windows=tuple(self.c.windows), max_lag=s,
        tolerance=self.c.tolerance)
    metrics = {}
    for k, r in results.items():
      metrics[f"sync/acc_k{k}"] = 100.0 * float(r["acc"])
      metrics[f"sync/offset_k{k}"] = float(r["offset"])
    audio_aligned = [self.audio_tokens(params, frozen, clip, 0, len(clip["frames"]))
                     for clip in self.clips]
    rp = sync_metrics.r_precision(np.concatenate(audio_aligned), np.concatenate(video),
                                  pool_size=self.c.pool_size, ks=tuple(self.c.ks), seed=self.c.seed)
    for k, v in rp.items():
      metrics[f"sync/rprec@{k}"] = 100.0 * float(v)
    return metrics

"""Frozen audio front ends giving per-frame features for T video frames (paper 3.1, 3.2).

Paper 3.2 "Audio Features and Adapter": a frozen L-layer speech encoder emits per-layer hidden
sequences aligned to one token per 25 fps video frame; the audio adapter
(`synclipmae_jax.models.audio_adapter`) concatenates them. `AudioEncoder` produces those aligned
features, [B, T, L, C], from a 16 kHz waveform of exactly 640 T samples (frame t covers samples
[640 t, 640 (t + 1))). It owns no trainable state: the train step applies it with frozen parameters
under `jax.lax.stop_gradient`, and the optimizer never sees them.

Front ends:
- "wav2vec2": `Wav2Vec2Model` hidden states (num_hidden_layers + 1 of them), aligned by
  - "resample" (the paper's wording, 3.1: "we resample the input waveform so that the encoder
    emits T tokens per utterance"): `resample` the waveform to
    `wav2vec2.num_samples_for_tokens(config, T)` samples (320 T + 80 for the base geometry, so the
    CNN emits exactly T frames), or
  - "interpolate": the CNN features are linearly interpolated to T frames before the feature
    projection (as Hallo, MultiTalk/InfiniteTalk and OmniAvatar do).
- "mel": a parameter-free log-mel baseline, L = 1 (see `mel_frame_features`).

Each utterance is normalised to zero mean and unit variance first when `normalize_waveform`
(transformers' `Wav2Vec2FeatureExtractor(do_normalize=True)`, eps 1e-7); with "resample" the
normalisation applies to the resampled waveform, the encoder's actual input.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from transformers import Wav2Vec2Config

from synclipmae_jax.models import wav2vec2
# The geometry and filter taps live in the jax-free `audio_signal` (shared with synclipmae_torch).
from synclipmae_jax.models.audio_signal import (
    LOG_MEL_FLOOR, MEL_FRAMES_PER_VIDEO_FRAME, MEL_HOP, MEL_WINDOW, NORMALIZE_EPS, SAMPLES_PER_FRAME,
    antialiased_resample_weights, mel_constants)

FRONTENDS = ("mel", "wav2vec2")
ALIGNMENTS = ("resample", "interpolate")


def zero_mean_unit_variance(waveform: jax.Array, eps: float = NORMALIZE_EPS) -> jax.Array:
  """Per-utterance normalisation of [B, N]: (x - mean) / sqrt(var + eps), population variance."""
  mean = jnp.mean(waveform, axis=-1, keepdims=True)
  var = jnp.var(waveform, axis=-1, keepdims=True)
  return (waveform - mean) / jnp.sqrt(var + eps)


def resample(waveform: jax.Array, out_length: int) -> jax.Array:
  """Anti-aliased linear resampling of [B, N] to [B, out_length] (`antialiased_resample_weights`).

  A banded gather-and-sum: unlike `jax.image.resize`, it never builds the dense [N, out_length]
  weight matrix (4.6 GB for a 3 s clip).
  """
  index, weights = antialiased_resample_weights(waveform.shape[-1], out_length)
  return jnp.sum(waveform[:, index] * weights, axis=-1)


def log_mel_spectrogram(waveform: jax.Array, n_mels: int) -> jax.Array:
  """log(mel power + 1e-6) of [B, N]: [B, N // 160, n_mels].

  STFT frame k is the 400 samples [160 k - 120, 160 k + 280) (zero padding outside the clip),
  centred on sample 160 k + 80, the middle of hop k = [160 k, 160 k + 160): mel frame k belongs to
  video frame floor(k / 4), and a video frame's 4 mel frames are centred at 80, 240, 400 and 560
  samples into it. Periodic Hann window, power spectrum |rfft|^2, HTK mel filters without area
  normalisation (`transformers.audio_utils.mel_filter_bank(..., norm=None, mel_scale="htk")`).
  """
  window, filters = mel_constants(n_mels)
  num_samples = waveform.shape[-1]
  num_mel_frames = num_samples // MEL_HOP
  left = (MEL_WINDOW - MEL_HOP) // 2
  right = MEL_HOP * num_mel_frames + left - num_samples
  padded = jnp.pad(waveform, ((0, 0), (left, right)))
  index = MEL_HOP * np.arange(num_mel_frames)[:, None] + np.arange(MEL_WINDOW)
  spectrum = jnp.fft.rfft(padded[:, index] * window, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  mel = jnp.einsum("bfk,km->bfm", power, filters, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel + LOG_MEL_FLOOR)


def mel_frame_features(
    waveform: jax.Array, num_frames: int, n_mels: int, context_frames: int) -> jax.Array:
  """Log-mel features per video frame: [B, 640 T] -> [B, T, 1, 4 (2 context_frames + 1) n_mels].

  Frame t's feature is the 4 mel frames of its 640 samples (`log_mel_spectrogram`) and those of
  `context_frames` video frames on each side (edge-padded at the clip ends), flattened in the order
  (video frame t - context_frames ... t + context_frames, mel frame 0..3, mel bin).
  """
  mel = log_mel_spectrogram(waveform, n_mels)
  per_frame = mel.reshape(mel.shape[0], num_frames, MEL_FRAMES_PER_VIDEO_FRAME * n_mels)
  padded = jnp.pad(per_frame, ((0, 0), (context_frames, context_frames), (0, 0)), mode="edge")
  windows = [padded[:, offset:offset + num_frames] for offset in range(2 * context_frames + 1)]
  return jnp.concatenate(windows, axis=-1)[:, :, None, :]


class AudioEncoder(nn.Module):
  """Frozen audio front end: waveform [B, 640 T] -> per-frame features [B, T, L, C] (paper 3.2).

  Attributes:
    frontend: "wav2vec2" (L = num_hidden_layers + 1, C = hidden_size) or "mel" (L = 1,
      C = 4 (2 context_frames + 1) n_mels).
    alignment: "resample" or "interpolate" (wav2vec2 only, see the module docstring).
    wav2vec2_config: the speech encoder's configuration (required for "wav2vec2").
    n_mels: mel bins of the "mel" front end.
    context_frames: video frames of context on each side for "mel".
    normalize_waveform: zero mean, unit variance per utterance before the front end.
  """

  frontend: str
  alignment: str = "resample"
  wav2vec2_config: Wav2Vec2Config | None = None
  n_mels: int = 40
  context_frames: int = 1
  normalize_waveform: bool = True

  def __post_init__(self):
    if self.frontend not in FRONTENDS:
      raise ValueError(f"frontend must be one of {FRONTENDS}, got {self.frontend!r}")
    if self.alignment not in ALIGNMENTS:
      raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
    if self.frontend == "wav2vec2":
      if self.wav2vec2_config is None:
        raise ValueError("frontend 'wav2vec2' needs a wav2vec2_config, got None")
      wav2vec2.check_config(self.wav2vec2_config)
    if self.n_mels < 1:
      raise ValueError(f"n_mels must be >= 1, got {self.n_mels}")
    if self.context_frames < 0:
      raise ValueError(f"context_frames must be >= 0, got {self.context_frames}")
    super().__post_init__()

  def setup(self):
    if self.frontend == "wav2vec2":
      self.wav2vec2 = wav2vec2.Wav2Vec2Model(self.wav2vec2_config)

  def wav2vec2_input_samples(self, num_frames: int) -> int:
    """Samples the speech encoder reads for `num_frames` video frames ("wav2vec2" only)."""
    if self.frontend != "wav2vec2":
      raise ValueError(f"the {self.frontend!r} front end has no speech encoder")
    if self.alignment == "resample":
      return wav2vec2.num_samples_for_tokens(self.wav2vec2_config, num_frames)
    return SAMPLES_PER_FRAME * num_frames

  def __call__(self, waveform: jax.Array, num_frames: int) -> jax.Array:
    """Per-frame features.

    Args:
      waveform: float32 [B, 640 num_frames], mono 16 kHz in [-1, 1].
      num_frames: T, the number of video frames (static).

    Returns:
      float32 [B, T, L, C].
    """
    if num_frames < 1:
      raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if waveform.ndim != 2 or waveform.shape[1] != SAMPLES_PER_FRAME * num_frames:
      raise ValueError(
          f"waveform must be [B, {SAMPLES_PER_FRAME} * {num_frames}] for {num_frames} frames, got "
          f"shape {waveform.shape}")
    waveform = waveform.astype(jnp.float32)
    normalize = zero_mean_unit_variance if self.normalize_waveform else (lambda x: x)
    if self.frontend == "mel":
      return mel_frame_features(normalize(waveform), num_frames, self.n_mels, self.context_frames)
    if self.alignment == "resample":
      length = self.wav2vec2_input_samples(num_frames)
      hidden_states = self.wav2vec2(normalize(resample(waveform, length)))
    else:
      hidden_states = self.wav2vec2(
          normalize(waveform), num_frames=num_frames, alignment="interpolate")
    return jnp.stack(hidden_states, axis=2)


def init_frozen_params(module: AudioEncoder, rng: jax.Array, num_frames: int) -> dict:
  """Randomly initialised frozen parameters of `module` ({} for "mel").

  The tree is {"wav2vec2": <Wav2Vec2Model params>} for "wav2vec2", unboxed (without the logical
  axis names that `train_state` uses to shard it); a converted pretrained checkpoint replaces it.
  """
  waveform = jnp.zeros((1, SAMPLES_PER_FRAME * num_frames), jnp.float32)
  variables = jax.jit(module.init, static_argnums=2)(rng, waveform, num_frames)
  return nn.unbox(variables.get("params", {}))


def build(audio_config) -> AudioEncoder:
  """The frozen audio front end named by `config.model.audio` (see configs/)."""
  w2v = None
  if audio_config.frontend == "wav2vec2":
    w2v = Wav2Vec2Config(**audio_config.wav2vec2.to_dict())
  return AudioEncoder(
      frontend=audio_config.frontend, alignment=audio_config.alignment, wav2vec2_config=w2v,
      n_mels=audio_config.n_mels, context_frames=audio_config.context_frames)

"""Frozen audio front ends giving per-frame features for T video frames (paper 3.1, 3.2).

Paper 3.2 "Audio Features and Adapter": a frozen L-layer speech encoder emits per-layer hidden
sequences aligned to one token per 25 fps video frame; the audio adapter
(`synclipmae_jax.models.audio_adapter`) concatenates them. `AudioEncoder` produces those aligned
features, [B, T, L, C], for the T frames of a window from a 16 kHz waveform of the window and C
frames of context on each side (`input_context_frames`; 640 (T + 2 C) samples, frame t of the
window covering samples [640 (t + C), 640 (t + C + 1))). Training and evaluation cut those
waveforms the same way (`data_pipelines.audio_windows`), so a frame's token does not depend on
which code computes it. It owns no trainable state: the train step applies it with frozen
parameters under `jax.lax.stop_gradient`, and the optimizer never sees them.

Front ends:
- "wav2vec2": `Wav2Vec2Model` hidden states (num_hidden_layers + 1 of them), aligned by
  - "resample" (the paper's wording, 3.1: "we resample the input waveform so that the encoder
    emits T tokens per utterance"): the waveform is resampled by the fixed ratio J / 640 (J = the
    CNN's total stride) and padded by the receptive field's overhang, so the CNN emits one token
    centred on each video frame (`audio_signal.resample_geometry`), or
  - "interpolate": the CNN features are linearly interpolated to one per frame before the
    feature projection (as Hallo, MultiTalk/InfiniteTalk and OmniAvatar do).
- "mel": a parameter-free log-mel baseline, L = 1 (see `mel_frame_features`).

Each window (context included) is normalised to zero mean and unit variance first when
`normalize_waveform` (transformers' `Wav2Vec2FeatureExtractor(do_normalize=True)`, eps 1e-7); with
"resample" the normalisation applies to the resampled waveform, the encoder's actual input.
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
    antialiased_resample_weights, mel_constants, resample_geometry)

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
  """Frozen audio front end: waveform [B, 640 (T + 2 input_context_frames)] -> per-frame features
  [B, T, L, C] of the T frames in the middle (paper 3.2).

  Attributes:
    frontend: "wav2vec2" (L = num_hidden_layers + 1, C = hidden_size) or "mel" (L = 1,
      C = 4 (2 context_frames + 1) n_mels).
    alignment: "resample" or "interpolate" (wav2vec2 only, see the module docstring).
    wav2vec2_config: the speech encoder's configuration (required for "wav2vec2").
    n_mels: mel bins of the "mel" front end.
    context_frames: video frames of context on each side for "mel" (features stacked per frame).
    input_context_frames: frames of waveform read on each side of the window (C).
    normalize_waveform: zero mean, unit variance per window before the front end.
  """

  frontend: str
  alignment: str = "resample"
  wav2vec2_config: Wav2Vec2Config | None = None
  n_mels: int = 40
  context_frames: int = 1
  input_context_frames: int = 0
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
    if self.input_context_frames < 0:
      raise ValueError(f"input_context_frames must be >= 0, got {self.input_context_frames}")
    super().__post_init__()

  def setup(self):
    if self.frontend == "wav2vec2":
      self.wav2vec2 = wav2vec2.Wav2Vec2Model(self.wav2vec2_config)

  def window_samples(self, num_frames: int) -> int:
    """Waveform samples of a window of `num_frames` frames with its context."""
    return SAMPLES_PER_FRAME * (num_frames + 2 * self.input_context_frames)

  def wav2vec2_input_samples(self, num_frames: int) -> int:
    """Samples the speech encoder reads for a window of `num_frames` frames ("wav2vec2" only)."""
    if self.frontend != "wav2vec2":
      raise ValueError(f"the {self.frontend!r} front end has no speech encoder")
    m = num_frames + 2 * self.input_context_frames
    if self.alignment == "resample":
      jump, left, right = resample_geometry(self.wav2vec2_config)
      return jump * m + left + right
    return SAMPLES_PER_FRAME * m

  def __call__(self, waveform: jax.Array, num_frames: int) -> jax.Array:
    """Per-frame features of a window.

    Args:
      waveform: float32 [B, 640 (num_frames + 2 input_context_frames)], mono 16 kHz in [-1, 1]:
        the window's frames with their context (`data_pipelines.audio_windows.audio_window`).
      num_frames: T, the number of video frames of the window (static).

    Returns:
      float32 [B, T, L, C].
    """
    if num_frames < 1:
      raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    c = self.input_context_frames
    if waveform.ndim != 2 or waveform.shape[1] != self.window_samples(num_frames):
      raise ValueError(
          f"waveform must be [B, {SAMPLES_PER_FRAME} * ({num_frames} + 2 * {c})] for {num_frames} "
          f"frames with {c} frames of context on each side, got shape {waveform.shape}")
    m = num_frames + 2 * c
    waveform = waveform.astype(jnp.float32)
    normalize = zero_mean_unit_variance if self.normalize_waveform else (lambda x: x)
    if self.frontend == "mel":
      features = mel_frame_features(normalize(waveform), m, self.n_mels, self.context_frames)
    else:
      if self.alignment == "resample":
        jump, left, right = resample_geometry(self.wav2vec2_config)
        resampled = normalize(resample(waveform, jump * m))
        hidden_states = self.wav2vec2(jnp.pad(resampled, ((0, 0), (left, right))))
      else:
        hidden_states = self.wav2vec2(normalize(waveform), num_frames=m, alignment="interpolate")
      features = jnp.stack(hidden_states, axis=2)
    return features[:, c:c + num_frames]


class HashableWav2Vec2Config(Wav2Vec2Config):
  """`transformers.Wav2Vec2Config`, hashable by value: an `AudioEncoder` holding it can key the
  evaluators' cached jitted functions (a PretrainedConfig defines __eq__ and so no __hash__)."""

  def __hash__(self):
    return hash(self.to_json_string(use_diff=False))


def init_frozen_params(module: AudioEncoder, rng: jax.Array, num_frames: int) -> dict:
  """Randomly initialised frozen parameters of `module` ({} for "mel").

  The tree is {"wav2vec2": <Wav2Vec2Model params>} for "wav2vec2", unboxed (without the logical
  axis names that `train_state` uses to shard it); a converted pretrained checkpoint replaces it.
  """
  waveform = jnp.zeros((1, module.window_samples(num_frames)), jnp.float32)
  variables = jax.jit(module.init, static_argnums=2)(rng, waveform, num_frames)
  return nn.unbox(variables.get("params", {}))


def build(audio_config) -> AudioEncoder:
  """The frozen audio front end named by `config.model.audio` (see configs/)."""
  w2v = None
  if audio_config.frontend == "wav2vec2":
    w2v = HashableWav2Vec2Config(**audio_config.wav2vec2.to_dict())
  return AudioEncoder(
      frontend=audio_config.frontend, alignment=audio_config.alignment, wav2vec2_config=w2v,
      n_mels=audio_config.n_mels, context_frames=audio_config.context_frames,
      input_context_frames=audio_config.input_context_frames)

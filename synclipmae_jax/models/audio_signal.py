"""Audio-to-video-frame geometry and numpy filter taps of the audio front ends (paper 3.1, 3.2).

Imports no jax: the JAX front end (`audio_encoder`, `wav2vec2`) and the PyTorch bridge
(`synclipmae_torch`) both read these, so the two sides align audio to video frames with the same
numbers. 16 kHz audio, 25 fps video: frame t covers samples [640 t, 640 (t + 1)).
"""

from __future__ import annotations

import functools

import numpy as np
from transformers.audio_utils import mel_filter_bank, window_function

from data_pipelines.schema import SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = ["SAMPLE_RATE", "SAMPLES_PER_FRAME", "NORMALIZE_EPS", "MEL_WINDOW", "MEL_HOP",
           "MEL_FRAMES_PER_VIDEO_FRAME", "MEL_MAX_FREQUENCY", "LOG_MEL_FLOOR",
           "antialiased_resample_weights", "mel_constants", "conv_output_length",
           "num_samples_for_tokens", "resample_geometry"]

NORMALIZE_EPS = 1e-7  # transformers' Wav2Vec2FeatureExtractor(do_normalize=True)
MEL_WINDOW = 400  # 25 ms Hann window, n_fft = 400
MEL_HOP = 160  # 10 ms
MEL_FRAMES_PER_VIDEO_FRAME = SAMPLES_PER_FRAME // MEL_HOP  # 4
MEL_MAX_FREQUENCY = 8_000.0
LOG_MEL_FLOOR = 1e-6


def antialiased_resample_weights(in_length: int, out_length: int) -> tuple[np.ndarray, np.ndarray]:
  """Taps of the anti-aliased linear resampler of the "resample" alignment.

  Output sample i sits at input position c_i = s (i + 0.5), s = in_length / out_length, input
  sample j at j + 0.5. Its weights are a triangle widened by the downsampling factor,
  w_ij = max(0, 1 - |j + 0.5 - c_i| / max(s, 1)), over the samples inside the input, normalised to
  sum to 1. This is the filter of PyTorch's `F.interpolate(x[:, None, None, :],
  size=(1, out_length), mode="bilinear", align_corners=False, antialias=True)[:, 0, 0]` and of
  `jax.image.resize(x, (B, out_length), "linear", antialias=True)`; both compute sample positions
  in float32 and so differ by up to ~1e-4 (3200 samples) to ~3e-3 (48000 samples, PyTorch) from
  the exact filter, whereas these weights are computed in float64 and rounded to float32 once.
  Both sides apply them as `(x[:, indices] * weights).sum(-1)`.

  Returns:
    (indices int32 [out_length, taps], weights float32 [out_length, taps]); taps outside the input
    have weight 0 and a clamped index.
  """
  if in_length < 1 or out_length < 1:
    raise ValueError(f"lengths must be >= 1, got in_length={in_length}, out_length={out_length}")
  scale = in_length / out_length
  support = max(scale, 1.0)
  centre = scale * (np.arange(out_length) + 0.5)
  taps = int(np.ceil(2 * support)) + 1
  index = np.floor(centre - support + 0.5).astype(np.int64)[:, None] + np.arange(taps)
  weights = np.maximum(0.0, 1.0 - np.abs(index + 0.5 - centre[:, None]) / support)
  weights[(index < 0) | (index >= in_length)] = 0.0
  weights /= weights.sum(axis=1, keepdims=True)
  return np.clip(index, 0, in_length - 1).astype(np.int32), weights.astype(np.float32)


@functools.lru_cache(maxsize=None)
def mel_constants(n_mels: int) -> tuple[np.ndarray, np.ndarray]:
  """(periodic Hann window [400], HTK mel filter bank [201, n_mels], 0-8 kHz, unnormalised)."""
  window = window_function(MEL_WINDOW, "hann", periodic=True).astype(np.float32)
  filters = mel_filter_bank(
      num_frequency_bins=MEL_WINDOW // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
      max_frequency=MEL_MAX_FREQUENCY, sampling_rate=SAMPLE_RATE, norm=None, mel_scale="htk")
  return window, filters.astype(np.float32)


def conv_output_length(config, num_samples: int) -> int:
  """Number of wav2vec2 CNN frames for `num_samples` input samples (floor((N - 400) / 320) + 1
  for base), for a `transformers.Wav2Vec2Config`.

  Same as transformers' `_get_feat_extract_output_lengths` (without adapter); can be <= 0 when
  the input is shorter than the receptive field.
  """
  length = num_samples
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    length = (length - kernel) // stride + 1
  return length


def num_samples_for_tokens(config, num_tokens: int) -> int:
  """Smallest input length for which the wav2vec2 CNN emits exactly `num_tokens` frames.

  Receptive field + total stride * (num_tokens - 1): 320 T + 80 for the base geometry.
  """
  if num_tokens < 1:
    raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
  receptive_field, jump = 1, 1
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    receptive_field += (kernel - 1) * jump
    jump *= stride
  return receptive_field + jump * (num_tokens - 1)


def resample_geometry(config) -> tuple[int, int, int]:
  """(J, left, right) of the "resample" alignment for a `transformers.Wav2Vec2Config`.

  The waveform of M video frames is resampled to J M samples, J the CNN's total stride (320 for
  base): a ratio J / 640 that does not depend on M. It is then padded with `left` and `right` zeros
  (receptive field - J in all: 40 + 40 for base), so the CNN emits exactly M tokens and token j is
  centred on the middle of video frame j.
  """
  jump = 1
  for stride in config.conv_stride:
    jump *= stride
  pad = num_samples_for_tokens(config, 1) - jump
  return jump, pad // 2, pad - pad // 2

"""The audio a frame's token is computed from: one definition for training and every evaluator.

A frame's audio token (paper 3.2, "Audio Features and Adapter") comes from a frozen speech encoder
that reads a window of waveform. Training reads windows of T frames (`data.window_frames`); so that
evaluation computes the same token for the same frame, it slides windows of the same T frames
over a clip, and every window reads `C` frames of audio context on each side
(`model.audio.input_context_frames`), cut from the clip and padded with silence beyond its ends,
exactly as the training pipeline cuts it. With this, the normalisation, the resampling ratio and
the context of a frame's audio are those of training whatever the clip length.

16 kHz audio, 25 fps video: frame t covers samples [640 t, 640 (t + 1)).
"""

from __future__ import annotations

import numpy as np

from data_pipelines.schema import SAMPLES_PER_FRAME

INT16_SCALE = 32768.0


def audio_window(audio: np.ndarray, start: int, stop: int, context_frames: int) -> np.ndarray:
  """float32 [640 (stop - start + 2 C)]: the samples of frames [start - C, stop + C) of a clip's
  waveform (int16 as stored, or float32 in [-1, 1]), zeros where that range leaves the clip."""
  if context_frames < 0 or stop <= start:
    raise ValueError(f"need start < stop and context_frames >= 0, got {start}, {stop}, {context_frames}")
  lo = SAMPLES_PER_FRAME * (start - context_frames)
  hi = SAMPLES_PER_FRAME * (stop + context_frames)
  out = np.zeros(hi - lo, np.float32)
  a, b = max(lo, 0), min(hi, len(audio))
  if a < b:
    piece = np.asarray(audio[a:b])
    out[a - lo:b - lo] = piece / INT16_SCALE if piece.dtype == np.int16 else piece
  return out


def sliding_windows(start: int, stop: int, window_frames: int) -> tuple[list[int], np.ndarray, np.ndarray]:
  """Windows of `window_frames` frames covering frames [start, stop), and where each frame's token
  is read.

  The windows start at start, start + T, ...; the last one ends at `stop` (it overlaps the one
  before when T does not divide the span). Frame f's token is token `offset[f - start]` of window
  `window[f - start]`: the first window that covers it.

  Returns:
    (window starts, window index [stop - start], offset in the window [stop - start]).

  Raises:
    ValueError: if the span is shorter than one window.
  """
  n, t = stop - start, window_frames
  if t < 1 or n < t:
    raise ValueError(f"frames [{start}, {stop}) are fewer than one window of {t} frames")
  starts = list(range(start, stop - t + 1, t))
  if starts[-1] + t < stop:
    starts.append(stop - t)
  frames = np.arange(start, stop)
  window = np.minimum((frames - start) // t, len(starts) - 1)
  return starts, window, frames - np.asarray(starts)[window]

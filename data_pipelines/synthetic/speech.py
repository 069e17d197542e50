"""Speech synthesis: random words -> one articulatory trajectory -> the audio and the mouth.

One trajectory, sampled every millisecond, drives both streams: the waveform (a band-limited
glottal pulse train at f0 shaped by time-varying formant resonances, plus shaped noise for
consonants) and the mouth (openness and spread/rounding, averaged per video frame). Targets
of successive phones (`phones`) are blended with the dominance model of coarticulation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy import signal

from data_pipelines import schema
from data_pipelines.synthetic import phones
from data_pipelines.synthetic import random_walk
from data_pipelines.synthetic.identity import Identity

_MS = schema.SAMPLE_RATE // 1000  # audio samples per control step (1 ms)
_PEAK = 10 ** (-3 / 20)  # -3 dBFS
_NOISE_GAIN = 0.8  # puts /s/ about 12 dB below an open vowel, bursts below the vowels
_LONG_PAUSE_MS = (300.0, 500.0)
_LONG_PAUSE_PROBABILITY = 0.02


@dataclasses.dataclass
class Speech:
  """What the speech drives: the clip's audio and the per-frame mouth parameters."""

  audio: np.ndarray  # int16 [640 N]
  mouth_open: np.ndarray  # float [N] in [0, 1]
  mouth_width: np.ndarray  # float [N] in [0, 1]
  transcript: str


def _smooth(x: np.ndarray, sigma_ms: float) -> np.ndarray:
  return ndimage.gaussian_filter1d(x, sigma_ms, axis=0, mode="nearest")


def _dominance(targets: np.ndarray, weights: np.ndarray, sigma_ms: float) -> np.ndarray:
  """Dominance-model coarticulation: the smoothed weighted mean of the targets."""
  return _smooth(targets * weights, sigma_ms) / _smooth(weights, sigma_ms)


def speak(identity: Identity, num_frames: int, rng: np.random.Generator) -> Speech:
  """Speaks random words for `num_frames` video frames (all randomness from `rng`)."""
  clip_ms = num_frames * 1000 // schema.FPS
  lead_ms = int(rng.integers(0, 400))  # the clip starts inside running speech
  rate = identity.speaking_rate * rng.uniform(0.92, 1.08)

  rows: list[tuple[int, phones.Target, float, float]] = []  # (ms, target, emphasis, accent)
  words: list[tuple[str, int, int]] = []
  total = 0
  while total < lead_ms + clip_ms + 200:
    word = phones.VOCABULARY[rng.integers(len(phones.VOCABULARY))]
    emphasis = rng.uniform(0.7, 1.0)
    accent = rng.uniform(-1.0, 1.0)
    stressed = rng.integers(sum(p in phones.VOWELS for p in word))
    start, vowel_index = total, 0
    for phone in word:
      is_vowel = phone in phones.VOWELS
      for target in (phones.VOWELS if is_vowel else phones.CONSONANTS)[phone]:
        ms = rng.uniform(*target.ms) / rate
        if is_vowel and vowel_index == stressed:
          ms *= 1.3
        rows.append((max(int(round(ms)), 1), target, emphasis,
                     accent + (0.5 if is_vowel and vowel_index == stressed else 0.0)))
        total += rows[-1][0]
      vowel_index += is_vowel
    words.append((word, start, total))
    pause = (rng.uniform(*_LONG_PAUSE_MS) if rng.random() < _LONG_PAUSE_PROBABILITY
             else rng.uniform(*phones.PAUSE.ms))
    rows.append((int(round(pause)), phones.PAUSE, 0.0, 0.0))
    total += rows[-1][0]

  durations = np.array([r[0] for r in rows])

  def channel(fn) -> np.ndarray:
    return np.repeat(np.array([fn(r) for r in rows], np.float64), durations, axis=0)

  formants = _dominance(channel(lambda r: r[1].formants),
                        channel(lambda r: r[1].formant_weight)[:, None], 15.0)
  formants = formants * identity.formant_scale
  openness = _dominance(channel(lambda r: r[1].openness), channel(lambda r: r[1].open_weight), 25.0)
  width = _dominance(channel(lambda r: r[1].width), channel(lambda r: r[1].width_weight), 30.0)
  envelope = _smooth(channel(lambda r: r[2]), 15.0)  # word-level loudness, 0 in pauses
  openness = np.clip(openness * envelope, 0.0, 1.0)
  voicing = _smooth(channel(lambda r: r[1].voicing), 6.0) * envelope * (0.4 + 0.6 * openness)
  aspiration = (_smooth(channel(lambda r: r[1].aspiration), 3.0) * envelope
                + identity.breathiness * voicing)
  noise = _smooth(channel(lambda r: [dict(r[1].noise).get(b, 0.0) for b in phones.BAND_NAMES]),
                  3.0)
  noise = noise * envelope[:, None]

  # Pitch: per-word accent, slow drift, vibrato and jitter around the speaker's f0.
  t_ms = np.arange(total)
  drift_knots = total // 50 + 2  # the drift is a walk sampled every 50 ms
  log_f0 = (0.06 * _smooth(channel(lambda r: r[3]), 40.0)
            + 0.04 * np.interp(t_ms, 50.0 * np.arange(drift_knots),
                               random_walk.smooth_walk(rng, drift_knots, 6.0))
            + 0.006 * np.sin(2 * np.pi * 5.3e-3 * t_ms + rng.uniform(0, 2 * np.pi))
            + 0.004 * random_walk.smooth_walk(rng, total, 2.0))
  f0 = identity.f0 * np.exp(log_f0)

  n = total * _MS
  sample_ms = np.arange(n) / _MS
  phase = 2 * np.pi * np.cumsum(np.interp(sample_ms, t_ms, f0)) / schema.SAMPLE_RATE
  phase = np.mod(phase, 2 * np.pi)
  harmonics = int(7600 // f0.max())
  # Band-limited pulse train: sum_{k=1..K} cos(k phase) (Dirichlet kernel), unit RMS.
  half = np.sin(phase / 2)
  safe = np.abs(half) > 1e-6
  pulses = np.where(safe, (np.sin((harmonics + 0.5) * phase) / np.where(safe, half, 1.0) - 1) / 2,
                    harmonics)
  pulses /= np.sqrt(harmonics / 2)
  white = rng.normal(0, 1, n)

  # Source-filter synthesis in the STFT domain (16 ms Hann windows, 8 ms hop).
  stft = dict(fs=schema.SAMPLE_RATE, window="hann", nperseg=256, noverlap=128)
  freqs, frame_s, pulse_spec = signal.stft(pulses, **stft)
  noise_spec = signal.stft(white, **stft)[2]
  frame_ms = np.clip(frame_s * 1000.0, 0, total - 1)
  f = freqs[:, None]  # [F, 1]

  def at_frames(x: np.ndarray) -> np.ndarray:
    return np.interp(frame_ms, t_ms, x)

  resonances = np.ones((len(freqs), len(frame_ms)))
  extra = np.array([3500.0, 4500.0]) * identity.formant_scale
  bandwidths = (80.0, 100.0, 150.0, 250.0, 300.0)
  for i, bw in enumerate(bandwidths):
    fi = at_frames(formants[:, i]) if i < 3 else np.full(len(frame_ms), extra[i - 3])
    b2 = (bw / 2) ** 2
    resonances *= (fi ** 2 + b2) / np.sqrt(((f - fi) ** 2 + b2) * ((f + fi) ** 2 + b2))
  tract = resonances / np.sqrt(1 + (f / 300.0) ** 2)  # net source tilt + lip radiation: -6 dB/oct
  noise_shape = sum(at_frames(noise[:, j]) * np.exp(-0.5 * ((f - c) / s) ** 2)
                    for j, (c, s) in enumerate(phones.NOISE_BANDS.values()))
  spectrum = (pulse_spec * (at_frames(voicing) * tract)
              + noise_spec * (_NOISE_GAIN * noise_shape + 0.5 * at_frames(aspiration) * tract))
  wave = signal.istft(spectrum, **stft)[1][:n]

  start = lead_ms * _MS
  wave = wave[start:start + num_frames * schema.SAMPLES_PER_FRAME]
  peak = max(np.abs(wave).max(), 1e-12)
  wave = wave + 3e-4 * peak * rng.normal(0, 1, len(wave))  # room-noise floor, -70 dB
  audio = np.round(wave * (_PEAK * 32767 / np.abs(wave).max())).astype(np.int16)

  def per_frame(x: np.ndarray) -> np.ndarray:
    x = np.interp(sample_ms[start:start + len(audio)], t_ms, x)
    return x.reshape(num_frames, schema.SAMPLES_PER_FRAME).mean(axis=1)

  end_ms = lead_ms + clip_ms
  transcript = " ".join(w for w, a, b in words if b > lead_ms and a < end_ms)
  return Speech(audio=audio, mouth_open=per_frame(openness), mouth_width=per_frame(width),
                transcript=transcript)

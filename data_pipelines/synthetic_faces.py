"""Procedural talking faces: a built-in audio-visual dataset for SyncLipMAE.

A speaker (`Identity`) says random words from a small vocabulary of CV syllables.
One articulatory trajectory, sampled at audio rate, drives both streams: the
waveform (a band-limited glottal pulse train at f0 shaped by time-varying formant
resonances, plus shaped noise for consonants) and the mouth (openness and
spread/rounding). Everything else in the picture -- blinks, gaze, head
translation, yaw and roll, and the emotion's brows and mouth-corner curvature --
comes from an independent `ambient_seed`. The three factors the paper's encoder
separates into per-frame prompt tokens (identity, vocal motion, ambient motion;
SyncLipMAE 3.1-3.2) are thereby independent by construction, and the mouth's
motion is the only link between sound and image.

Rendering is vectorised numpy over frames with analytic anti-aliasing: ellipses
use a first-order signed distance with a 1 px ramp, and mouth, eyes and brows are
vertical bands whose pixel coverage is exact along y, so sub-pixel changes of the
mouth opening change pixel values. Small features are drawn in per-frame crops
that move with the head. Every mouth layer's coverage is zero outside the frame's
mouth box, whose size and position depend on the head pose alone, so pixels
outside the mouth boxes do not depend on the speech.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy import signal

from data_pipelines import schema

_MS = schema.SAMPLE_RATE // 1000  # audio samples per control step (1 ms)
_PEAK = 10 ** (-3 / 20)  # -3 dBFS

# ---------------------------------------------------------------------------
# Phones. Symbols follow X-SAMPA; all are one character, so a word is a string.
# ---------------------------------------------------------------------------

_NOISE_BANDS = {  # name: (centre Hz, standard deviation Hz) of a Gaussian spectral band
    "labial": (900.0, 700.0),
    "alveolar": (4200.0, 1500.0),
    "velar": (2100.0, 600.0),
    "s": (5800.0, 1300.0),
    "sh": (3200.0, 900.0),
    "f": (4500.0, 3000.0),
}
_BAND_NAMES = tuple(_NOISE_BANDS)
_NOISE_GAIN = 0.8  # puts /s/ about 12 dB below an open vowel, bursts below the vowels
_NEUTRAL_FORMANTS = (500.0, 1500.0, 2500.0)


@dataclasses.dataclass(frozen=True)
class _Target:
  """One steady articulatory target held for a while (a phone, or one phase of it).

  Targets are blended with the dominance model of coarticulation: each channel is
  the Gaussian-smoothed weighted mean of the targets, so a low weight lets a
  segment inherit the value of its neighbours (e.g. the lip shape of a /t/).
  """

  ms: tuple[float, float]  # duration range in ms
  formants: tuple[float, float, float] = _NEUTRAL_FORMANTS  # F1, F2, F3 (Hz) at formant scale 1
  formant_weight: float = 0.05
  openness: float = 0.3  # mouth opening in [0, 1]
  open_weight: float = 0.3
  width: float = 0.5  # 0 = rounded, 1 = spread
  width_weight: float = 0.1
  voicing: float = 0.0  # gain of the voiced source
  aspiration: float = 0.0  # formant-shaped breath noise (/h/-like)
  noise: tuple[tuple[str, float], ...] = ()  # (band, gain) of frication/burst noise


def _vowel(f1: float, f2: float, f3: float, openness: float, width: float) -> tuple[_Target, ...]:
  return (_Target(ms=(90.0, 150.0), formants=(f1, f2, f3), formant_weight=1.0, openness=openness,
                  open_weight=1.0, width=width, width_weight=1.0, voicing=1.0),)


# Openness follows F1 and spreading follows F2, as for real vowels.
VOWELS: dict[str, tuple[_Target, ...]] = {
    "i": _vowel(280.0, 2250.0, 2900.0, openness=0.12, width=1.0),
    "e": _vowel(400.0, 2050.0, 2650.0, openness=0.35, width=0.85),
    "E": _vowel(580.0, 1800.0, 2550.0, openness=0.6, width=0.75),
    "a": _vowel(780.0, 1250.0, 2500.0, openness=1.0, width=0.6),
    "O": _vowel(600.0, 950.0, 2450.0, openness=0.75, width=0.3),
    "o": _vowel(440.0, 850.0, 2400.0, openness=0.45, width=0.2),
    "u": _vowel(310.0, 800.0, 2300.0, openness=0.15, width=0.0),
}

_LIPS_SHUT = dict(openness=0.0, open_weight=8.0)
CONSONANTS: dict[str, tuple[_Target, ...]] = {
    "p": (_Target(ms=(60.0, 90.0), **_LIPS_SHUT),
          _Target(ms=(15.0, 25.0), openness=0.15, open_weight=1.0, aspiration=0.4,
                  noise=(("labial", 1.0),))),
    "b": (_Target(ms=(50.0, 70.0), voicing=0.15, **_LIPS_SHUT),
          _Target(ms=(8.0, 12.0), openness=0.15, open_weight=1.0, voicing=0.3,
                  noise=(("labial", 0.6),))),
    "m": (_Target(ms=(60.0, 90.0), formants=(250.0, 1100.0, 2300.0), formant_weight=0.7,
                  voicing=0.35, **_LIPS_SHUT),),
    "f": (_Target(ms=(80.0, 110.0), openness=0.06, open_weight=4.0, width=0.6, width_weight=0.5,
                  noise=(("f", 0.35),)),),
    "v": (_Target(ms=(60.0, 90.0), openness=0.06, open_weight=4.0, width=0.6, width_weight=0.5,
                  voicing=0.3, noise=(("f", 0.2),)),),
    "t": (_Target(ms=(50.0, 80.0), openness=0.2, open_weight=0.6),
          _Target(ms=(15.0, 25.0), openness=0.25, open_weight=0.5, aspiration=0.3,
                  noise=(("alveolar", 0.9),))),
    "d": (_Target(ms=(40.0, 60.0), openness=0.2, open_weight=0.6, voicing=0.15),
          _Target(ms=(8.0, 12.0), openness=0.25, open_weight=0.5, voicing=0.3,
                  noise=(("alveolar", 0.6),))),
    "n": (_Target(ms=(50.0, 80.0), formants=(250.0, 1600.0, 2600.0), formant_weight=0.7,
                  openness=0.2, open_weight=0.6, voicing=0.35),),
    "s": (_Target(ms=(90.0, 130.0), openness=0.12, open_weight=1.5, width=0.8, width_weight=1.0,
                  noise=(("s", 0.7),)),),
    "z": (_Target(ms=(70.0, 100.0), openness=0.12, open_weight=1.5, width=0.8, width_weight=1.0,
                  voicing=0.3, noise=(("s", 0.5),)),),
    "l": (_Target(ms=(40.0, 70.0), formants=(360.0, 1100.0, 2700.0), formant_weight=0.7,
                  openness=0.3, open_weight=0.5, voicing=0.6),),
    "k": (_Target(ms=(60.0, 90.0), openness=0.3, open_weight=0.4),
          _Target(ms=(20.0, 30.0), openness=0.3, open_weight=0.4, aspiration=0.3,
                  noise=(("velar", 0.9),))),
    "g": (_Target(ms=(40.0, 60.0), openness=0.3, open_weight=0.4, voicing=0.15),
          _Target(ms=(10.0, 15.0), openness=0.3, open_weight=0.4, voicing=0.3,
                  noise=(("velar", 0.6),))),
    "S": (_Target(ms=(90.0, 130.0), openness=0.15, open_weight=1.5, width=0.15, width_weight=3.0,
                  noise=(("sh", 0.7),)),),
}
_PAUSE = _Target(ms=(40.0, 120.0), openness=0.03, open_weight=1.5, width=0.5, width_weight=0.3)
_LONG_PAUSE_MS = (300.0, 500.0)
_LONG_PAUSE_PROBABILITY = 0.02

VOCABULARY = (
    "ma", "pi", "bolu", "tami", "nesa", "kOfe", "lipa", "sumo", "dEki", "gaSu", "vito", "fanu",
    "zOle", "mupi", "teba", "kalomi", "sinEpa", "butega", "Somi", "dafo", "linu", "pOsa", "gemu",
    "nuvE",
)

# Emotion -> (brow raise [x b], brow inner-end raise [x b], mouth-corner curvature [x a],
# eye opening scale); the order follows schema.EMOTION_NAMES.
_EMOTION_STYLE = {
    "neutral": (0.0, 0.0, 0.0, 1.0),
    "happy": (0.02, 0.0, 0.13, 0.85),
    "sad": (0.0, 0.06, -0.09, 0.9),
    "angry": (-0.05, -0.07, -0.05, 0.8),
    "surprised": (0.08, 0.0, 0.0, 1.3),
}
_CURVATURE_WANDER = 0.03  # bound of the slow wander of the curvature around the emotion's, x a
_SMILE_CURVATURE = 0.06  # corner curvature (x a) above which a frame counts as smiling
_HEAD_TURN_YAW = 0.35  # |yaw| (rad) above which a frame counts as a head turn
_MAX_YAW = 0.55
_MAX_ROLL = 0.1


# ---------------------------------------------------------------------------
# Identity.
# ---------------------------------------------------------------------------

_SKIN_TONES = np.array([(0.96, 0.80, 0.69), (0.87, 0.67, 0.53), (0.72, 0.52, 0.38),
                        (0.52, 0.36, 0.25), (0.34, 0.23, 0.16)])
_HAIR_COLOURS = np.array([(0.08, 0.07, 0.07), (0.24, 0.15, 0.08), (0.45, 0.30, 0.15),
                          (0.85, 0.70, 0.42), (0.60, 0.25, 0.10), (0.66, 0.66, 0.66)])
_IRIS_COLOURS = np.array([(0.25, 0.15, 0.08), (0.30, 0.45, 0.70), (0.30, 0.50, 0.30),
                          (0.10, 0.08, 0.06)])
HAIR_STYLES = ("short", "long", "crew_cut")
MOUTH_INSIDE = (0.1, 0.03, 0.04)  # colour of the mouth's opening (darker than any skin or lips)


@dataclasses.dataclass(frozen=True)
class Identity:
  """What stays fixed for a speaker: appearance (sizes in fractions of the image) and voice."""

  identity_id: int
  face_half_width: float  # a, fraction of the image size
  face_aspect: float  # b / a
  face_center_y: float  # fraction of the image size
  skin: tuple[float, float, float]  # RGB in [0, 1]
  lips: tuple[float, float, float]
  hair: tuple[float, float, float]
  hair_style: str  # one of HAIR_STYLES
  hairline: float  # height of the fringe above the face centre, x b
  hair_part: float  # slope of the hairline (side parting)
  iris: tuple[float, float, float]
  shirt: tuple[float, float, float]
  background: tuple[tuple[float, float, float], tuple[float, float, float]]
  background_angle: float  # direction of the background gradient (rad)
  eye_spacing: float  # x a
  eye_size: float  # eye half-width, x a
  brow_thickness: float  # x b
  mouth_scale: float
  f0: float  # mean voice pitch (Hz)
  formant_scale: float  # vocal tract length: formants are multiplied by it
  speaking_rate: float
  breathiness: float


def make_identity(identity_id: int, seed: int) -> Identity:
  """Draws speaker `identity_id`'s appearance and voice, deterministically from `seed`."""
  rng = np.random.default_rng([seed, identity_id, 0x1D])
  tone = rng.uniform(0, len(_SKIN_TONES) - 1)
  lo = int(tone)
  hi = min(lo + 1, len(_SKIN_TONES) - 1)
  skin = (_SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[hi] - _SKIN_TONES[lo])
          + rng.normal(0, 0.02, 3))
  skin = np.clip(skin, 0, 1)
  lips = np.clip(skin * np.array([0.78, 0.52, 0.52]) + np.array([0.12, 0.0, 0.02])
                 + rng.normal(0, 0.02, 3), 0, 1)
  hair = np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 0.03, 3), 0, 1)
  background = rng.uniform(0.1, 0.9, (2, 3))
  female = rng.random() < 0.5
  f0 = rng.uniform(165.0, 250.0) if female else rng.uniform(90.0, 150.0)
  formant_scale = float(np.clip(0.86 + 0.28 * (f0 - 90.0) / 160.0 + rng.normal(0, 0.03),
                                0.85, 1.2))
  return Identity(
      identity_id=int(identity_id),
      face_half_width=float(rng.uniform(0.26, 0.30)),
      face_aspect=float(rng.uniform(1.12, 1.3)),
      face_center_y=float(rng.uniform(0.5, 0.54)),
      skin=tuple(float(c) for c in skin),
      lips=tuple(float(c) for c in lips),
      hair=tuple(float(c) for c in hair),
      hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
      hairline=float(rng.uniform(0.5, 0.72)),
      hair_part=float(rng.uniform(-0.2, 0.2)),
      iris=tuple(float(c) for c in np.clip(
          _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.normal(0, 0.03, 3), 0, 1)),
      shirt=tuple(float(c) for c in rng.uniform(0.05, 0.95, 3)),
      background=(tuple(float(c) for c in background[0]), tuple(float(c) for c in background[1])),
      background_angle=float(rng.uniform(0, 2 * np.pi)),
      eye_spacing=float(rng.uniform(0.36, 0.44)),
      eye_size=float(rng.uniform(0.17, 0.21)),
      brow_thickness=float(rng.uniform(0.035, 0.06)),
      mouth_scale=float(rng.uniform(0.92, 1.05)),
      f0=float(f0),
      formant_scale=formant_scale,
      speaking_rate=float(rng.uniform(0.85, 1.15)),
      breathiness=float(rng.uniform(0.0, 0.1)),
  )


# ---------------------------------------------------------------------------
# Speech: articulatory trajectory -> audio and per-frame mouth parameters.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Speech:
  """What the speech drives: the clip's audio and the per-frame mouth parameters."""

  audio: np.ndarray  # int16 [640 N]
  mouth_open: np.ndarray  # float [N] in [0, 1]
  mouth_width: np.ndarray  # float [N] in [0, 1]
  transcript: str


def _smooth(x: np.ndarray, sigma_ms: float) -> np.ndarray:
  return ndimage.gaussian_filter1d(x, sigma_ms, axis=0, mode="nearest")


def _walk(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
  """Smooth stationary random walk of n steps (Gaussian-filtered noise) with unit variance."""
  x = ndimage.gaussian_filter1d(rng.normal(0, 1, n + 8 * int(sigma)), sigma,
                                mode="wrap")[:n]
  return x * np.sqrt(2 * np.sqrt(np.pi) * sigma)


def _dominance(targets: np.ndarray, weights: np.ndarray, sigma_ms: float) -> np.ndarray:
  """Dominance-model coarticulation: the smoothed weighted mean of the targets."""
  return _smooth(targets * weights, sigma_ms) / _smooth(weights, sigma_ms)


def _speak(identity: Identity, num_frames: int, rng: np.random.Generator) -> _Speech:
  """Speaks random words for `num_frames` video frames (all randomness from `rng`)."""
  clip_ms = num_frames * 1000 // schema.FPS
  lead_ms = int(rng.integers(0, 400))  # the clip starts inside running speech
  rate = identity.speaking_rate * rng.uniform(0.92, 1.08)

  rows: list[tuple[int, _Target, float, float]] = []  # (ms, target, emphasis, accent)
  words: list[tuple[str, int, int]] = []
  total = 0
  while total < lead_ms + clip_ms + 200:
    word = VOCABULARY[rng.integers(len(VOCABULARY))]
    emphasis = rng.uniform(0.7, 1.0)
    accent = rng.uniform(-1.0, 1.0)
    stressed = rng.integers(sum(p in VOWELS for p in word))
    start, vowel_index = total, 0
    for phone in word:
      is_vowel = phone in VOWELS
      for target in (VOWELS if is_vowel else CONSONANTS)[phone]:
        ms = rng.uniform(*target.ms) / rate
        if is_vowel and vowel_index == stressed:
          ms *= 1.3
        rows.append((max(int(round(ms)), 1), target, emphasis,
                     accent + (0.5 if is_vowel and vowel_index == stressed else 0.0)))
        total += rows[-1][0]
      vowel_index += is_vowel
    words.append((word, start, total))
    pause = (rng.uniform(*_LONG_PAUSE_MS) if rng.random() < _LONG_PAUSE_PROBABILITY
             else rng.uniform(*_PAUSE.ms))
    rows.append((int(round(pause)), _PAUSE, 0.0, 0.0))
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
  noise = _smooth(channel(lambda r: [dict(r[1].noise).get(b, 0.0) for b in _BAND_NAMES]), 3.0)
  noise = noise * envelope[:, None]

  # Pitch: per-word accent, slow drift, vibrato and jitter around the speaker's f0.
  t_ms = np.arange(total)
  drift_knots = total // 50 + 2  # the drift is a walk sampled every 50 ms
  log_f0 = (0.06 * _smooth(channel(lambda r: r[3]), 40.0)
            + 0.04 * np.interp(t_ms, 50.0 * np.arange(drift_knots), _walk(rng, drift_knots, 6.0))
            + 0.006 * np.sin(2 * np.pi * 5.3e-3 * t_ms + rng.uniform(0, 2 * np.pi))
            + 0.004 * _walk(rng, total, 2.0))
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
                    for j, (c, s) in enumerate(_NOISE_BANDS.values()))
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
  return _Speech(audio=audio, mouth_open=per_frame(openness), mouth_width=per_frame(width),
                 transcript=transcript)


# ---------------------------------------------------------------------------
# Ambient motion: blinks, gaze, head pose, emotion.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Ambient:
  """Everything that moves independently of the speech, per frame."""

  emotion: int
  shift_x: np.ndarray  # head translation, fraction of the image [N]
  shift_y: np.ndarray
  yaw: np.ndarray  # rad [N]
  roll: np.ndarray  # rad [N]
  eye_open: np.ndarray  # [N], 1 open, 0 closed (blink), before the emotion's scale
  gaze: np.ndarray  # [N], horizontal gaze in [-1, 1]
  curvature: np.ndarray  # mouth-corner curvature [N], x a (positive: corners up)


def _ambient(num_frames: int, rng: np.random.Generator, emotion: int | None) -> _Ambient:
  """Draws blinks, gaze, head pose and the emotion's expression (all randomness from `rng`)."""
  n = num_frames
  drawn_emotion = int(rng.integers(len(schema.EMOTION_NAMES)))  # drawn even when given, so
  emotion = drawn_emotion if emotion is None else emotion  # the motion below stays the same
  eye_open = np.ones(n)
  t = int(rng.uniform(0, 3.0) * schema.FPS)
  while t < n:
    d = int(rng.integers(3, 6))
    k = np.arange(d)
    closure = np.sin(np.pi * (k + 0.5) / d) ** 0.7
    closure /= closure.max()
    sl = slice(t, min(t + d, n))
    eye_open[sl] = 1 - closure[:sl.stop - t]
    t += d + int(rng.uniform(1.5, 5.0) * schema.FPS)
  saccades = np.repeat(rng.uniform(-1, 1, n // 10 + 1), 10)[:n]
  style = _EMOTION_STYLE[schema.EMOTION_NAMES[emotion]]
  return _Ambient(
      emotion=emotion,
      shift_x=0.09 * np.tanh(0.7 * _walk(rng, n, 12.0)),
      shift_y=0.07 * np.tanh(0.7 * _walk(rng, n, 12.0)),
      yaw=_MAX_YAW * np.tanh(0.6 * _walk(rng, n, 18.0)),
      roll=_MAX_ROLL * np.tanh(0.5 * _walk(rng, n, 15.0)),
      eye_open=eye_open,
      gaze=np.clip(ndimage.gaussian_filter1d(saccades, 0.7, mode="nearest"), -1, 1),
      curvature=style[2] + _CURVATURE_WANDER * np.tanh(0.7 * _walk(rng, n, 10.0)),
  )


# ---------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------


def _band(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """Coverage of the band lo < y < hi by a unit pixel centred at y (exact along y)."""
  return np.clip(np.minimum(y + 0.5, hi) - np.maximum(y - 0.5, lo), 0.0, 1.0)


def _ramp(d: np.ndarray) -> np.ndarray:
  """Coverage of a pixel whose centre lies d px inside an edge (d < 0: outside); 1 px ramp."""
  return np.clip(d + 0.5, 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, rx, ry) -> np.ndarray:
  """Coverage of the ellipse (x/rx)^2 + (y/ry)^2 < 1, from its first-order signed distance."""
  q = (x / rx) ** 2 + (y / ry) ** 2
  grad = 2 * np.sqrt((x / rx ** 2) ** 2 + (y / ry ** 2) ** 2)
  return _ramp((1 - q) / np.maximum(grad, 1e-6))


def _paint(region: np.ndarray, alpha: np.ndarray, colour) -> None:
  """Composites `colour` (RGB or [3, ...]) with coverage `alpha` over planar `region` [3, ...]."""
  colour = np.asarray(colour, np.float32)
  if colour.ndim == 1:
    colour = colour.reshape(3, *([1] * (region.ndim - 1)))
  region += alpha.astype(np.float32) * (colour - region)


@dataclasses.dataclass
class _Pose:
  """Per-frame head pose, arrays shaped [N, 1, 1] to broadcast over pixels."""

  cx: np.ndarray  # head centre (px)
  cy: np.ndarray
  cos_roll: np.ndarray
  sin_roll: np.ndarray
  cos_yaw: np.ndarray
  sin_yaw: np.ndarray

  def head(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image pixel coordinates -> head coordinates (px, rotated with the head's roll)."""
    dx, dy = x - self.cx, y - self.cy
    return self.cos_roll * dx + self.sin_roll * dy, self.cos_roll * dy - self.sin_roll * dx

  def image(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (self.cx + self.cos_roll * u - self.sin_roll * v,
            self.cy + self.sin_roll * u + self.cos_roll * v)


class _Crop:
  """A window of every frame holding a head-aligned box that follows the head.

  The box has half-extents (half_u, half_v) around the head point (u, v); the window
  holds it at any roll up to _MAX_ROLL and is shifted inside the image at its borders.
  """

  def __init__(self, pose: _Pose, u, v, half_u: float, half_v: float, image_size: int):
    sin = np.sin(_MAX_ROLL)
    width = min(int(2 * np.ceil(half_u + sin * half_v) + 2), image_size)
    height = min(int(2 * np.ceil(half_v + sin * half_u) + 2), image_size)
    x, y = pose.image(u, v)
    x0 = np.clip(np.round(x.reshape(-1) - width / 2), 0, image_size - width).astype(np.int64)
    y0 = np.clip(np.round(y.reshape(-1) - height / 2), 0, image_size - height).astype(np.int64)
    self.index = (slice(None), np.arange(len(x0))[:, None, None],
                  (y0[:, None] + np.arange(height))[:, :, None],
                  (x0[:, None] + np.arange(width))[:, None, :])
    self.u, self.v = pose.head(self.index[3].astype(np.float32) + 0.5,
                               self.index[2].astype(np.float32) + 0.5)


def _render(identity: Identity, speech: _Speech, amb: _Ambient, image_size: int):
  """Draws the frames; returns (uint8 frames [N, S, S, 3], face boxes, mouth boxes)."""
  n, size = len(amb.yaw), image_size
  a = identity.face_half_width * size
  b = a * identity.face_aspect

  def col(x) -> np.ndarray:  # per-frame values -> [N, 1, 1]
    return np.asarray(x, np.float32).reshape(-1, 1, 1)

  pose = _Pose(cx=col(size * (0.5 + amb.shift_x)), cy=col(size * (identity.face_center_y
                                                                   + amb.shift_y)),
               cos_roll=col(np.cos(amb.roll)), sin_roll=col(np.sin(amb.roll)),
               cos_yaw=col(np.cos(amb.yaw)), sin_yaw=col(np.sin(amb.yaw)))
  cy, sy = pose.cos_yaw, pose.sin_yaw

  # Background: a static gradient.
  pix = np.arange(size, dtype=np.float32) + 0.5
  g = ((pix[None, :] - size / 2) * np.cos(identity.background_angle)
       + (pix[:, None] - size / 2) * np.sin(identity.background_angle)) / size + 0.5
  bg0, bg1 = np.array(identity.background)
  canvas = np.empty((3, n, size, size), np.float32)  # planar: broadcasting over RGB is cheap
  canvas[:] = (bg0 + np.clip(g, 0, 1)[..., None] * (bg1 - bg0)).transpose(2, 0, 1)[:, None]

  # Body: neck and shoulders follow the head's translation but not its rotation.
  x, y = pix[None, None, :] - pose.cx, pix[None, :, None] - pose.cy
  skin = np.array(identity.skin)
  _paint(canvas, _ellipse(x, y - 1.95 * b, 2.0 * a, 0.95 * b), identity.shirt)
  _paint(canvas, _ramp(0.45 * a - np.abs(x)) * _ramp(np.minimum(y - 0.3 * b, 1.75 * b - y)),
         0.8 * skin)

  # Head: hair behind, ears, face, fringe.
  u, v = pose.head(pix[None, None, :], pix[None, :, None])
  face_u, face_a = 0.3 * a * sy, a * (0.8 + 0.2 * cy)  # the face narrows when turned
  hair_u = -0.2 * a * sy  # ... and the far side of the head shows more hair
  hair_rx, hair_ry, hair_v = ((1.12 * a, 1.07 * b, -0.1 * b) if identity.hair_style != "crew_cut"
                              else (1.04 * a, 1.03 * b, -0.04 * b))
  hair_cover = _ellipse(u - hair_u, v - hair_v, hair_rx, hair_ry)
  if identity.hair_style == "long":  # covers the ears
    long_hair = (_ramp(1.12 * a - np.abs(u - hair_u)) * _ramp(np.minimum(v - hair_v, 1.2 * b - v)))
    _paint(canvas, np.maximum(hair_cover, long_hair), identity.hair)
  else:
    _paint(canvas, hair_cover, identity.hair)
    for side in (-1, 1):
      ear_u = face_u + side * 0.97 * face_a
      crop = _Crop(pose, ear_u, -0.05 * b, 0.14 * a + 1.0, 0.2 * b + 1.0, size)
      region = canvas[crop.index]
      _paint(region, _ellipse(crop.u - ear_u, crop.v + 0.05 * b, 0.14 * a, 0.2 * b), 0.92 * skin)
      canvas[crop.index] = region
  fu, fv = u - face_u, v
  face = _ellipse(fu, fv, face_a, b)
  shade = 1.04 - 0.12 * ((fu / face_a) ** 2 + (fv / b) ** 2)
  _paint(canvas, face, shade * skin.reshape(3, 1, 1, 1).astype(np.float32))
  s = fu / face_a
  hairline = -identity.hairline * b + identity.hair_part * a * s + 0.2 * b * s ** 2
  if identity.hair_style == "crew_cut":
    hairline = hairline - 0.25 * b
  _paint(canvas, hair_cover * _ramp(hairline - v), identity.hair)

  # Facial features sit on the front of the head: they move with yaw and are foreshortened.
  def feature_u(x_frontal: float, depth: float) -> np.ndarray:
    return x_frontal * cy + depth * sy

  style = _EMOTION_STYLE[schema.EMOTION_NAMES[amb.emotion]]
  brow_raise, brow_inner, _, eye_scale = style
  eye_half_width = identity.eye_size * a
  eye_v = -0.12 * b
  eye_open = col(np.clip(amb.eye_open * eye_scale, 0, None))
  gaze = col(amb.gaze)
  # The crop spans from the top of the highest brow to the bottom of the widest-open eye.
  above = (0.24 + max(0.0, brow_raise) + max(0.0, brow_inner) + identity.brow_thickness) * b + 1
  below = 0.42 * 1.3 * eye_half_width + 1.0
  for side in (-1, 1):
    eu = feature_u(side * identity.eye_spacing * a, 0.75 * a)
    crop = _Crop(pose, eu, eye_v - (above - below) / 2, 1.3 * eye_half_width + 0.05 * a + 1.0,
                 (above + below) / 2, size)
    region = canvas[crop.index]
    du, dv = crop.u - eu, crop.v - eye_v
    ew = eye_half_width * cy
    s = np.clip(du / ew, -1, 1)
    profile = (1 - s ** 2) ** 0.6
    height = 0.42 * eye_half_width * eye_open * profile
    inside = _ramp(ew - np.abs(du))
    sclera = _band(dv, -height, height) * inside
    _paint(region, sclera, (0.95, 0.94, 0.92))
    iris_r = 0.5 * eye_half_width
    iris = _ellipse(du - 0.45 * ew * gaze, dv, iris_r * cy, iris_r) * sclera
    _paint(region, iris, identity.iris)
    _paint(region, _ellipse(du - 0.45 * ew * gaze, dv, 0.5 * iris_r * cy, 0.5 * iris_r) * sclera,
           (0.03, 0.03, 0.03))
    _paint(region, 0.85 * _band(dv, -height - 0.6, -height) * _ramp(1.1 * ew - np.abs(du)),
           (0.1, 0.07, 0.06))
    # Brow: a tapered band; s_in = +1 at its inner end (towards the nose).
    brow_len = 1.3 * eye_half_width * cy
    bu = feature_u(side * identity.eye_spacing * a, 0.8 * a)
    s_in = np.clip(-side * (crop.u - bu) / brow_len, -1, 1)
    centre = (eye_v - 0.2 * b - brow_raise * b - 0.04 * b * (1 - s_in ** 2)
              - brow_inner * b * (s_in + 1) / 2)
    thick = identity.brow_thickness * b * (0.7 + 0.15 * (1 + s_in))  # thicker at the inner end
    _paint(region, _band(crop.v, centre - thick, centre + thick)
           * _ramp(brow_len - np.abs(crop.u - bu)), 0.7 * np.array(identity.hair))
    canvas[crop.index] = region

  # Nose: soft shadow and nostrils.
  nu, nv = feature_u(0.0, 1.0 * a), 0.18 * b
  crop = _Crop(pose, nu, nv, 0.2 * a + 1.0, 0.1 * b + 1.0, size)
  region = canvas[crop.index]
  du, dv = crop.u - nu, crop.v - nv
  _paint(region, 0.5 * _ellipse(du, dv, 0.14 * a * cy, 0.07 * b), 0.8 * skin)
  for side in (-1, 1):
    _paint(region, 0.7 * _ellipse(du - side * 0.09 * a * cy, dv, 0.05 * a * cy, 0.035 * b),
           0.45 * skin)
  canvas[crop.index] = region

  # Mouth: lips around a dark opening, teeth and tongue showing when wide open.
  def half_width_of(width):  # mouth half-width (px) for a width parameter in [0, 1]
    return a * identity.mouth_scale * (0.40 + 0.16 * width)

  max_open, lip_up, lip_down = 0.44 * b, 0.09 * b, 0.12 * b  # opening and lip thicknesses (px)
  mu, mv = feature_u(0.0, 0.8 * a), 0.48 * b
  w_t, o_t = col(speech.mouth_width), col(speech.mouth_open)
  curv = col(amb.curvature) * a
  mouth_w = half_width_of(w_t) * cy
  opening = o_t * max_open
  box_w = half_width_of(1.0) * cy + 1.5
  # The mouth box bounds every mouth shape (opening, rounded lips, corner curvature) plus the
  # 1 px anti-aliasing ramp, so nothing the speech changes is drawn outside it.
  box_up = 0.3 * max_open + 1.4 * lip_up + np.maximum(curv, 0) + 1.0
  box_down = 0.7 * max_open + 1.4 * lip_down + np.maximum(-curv, 0) + 1.0
  curvatures = [c[2] for c in _EMOTION_STYLE.values()]
  up = 0.3 * max_open + 1.4 * lip_up + (max(curvatures) + _CURVATURE_WANDER) * a + 1.0
  down = 0.7 * max_open + 1.4 * lip_down - (min(curvatures) - _CURVATURE_WANDER) * a + 1.0
  crop = _Crop(pose, mu, mv + (down - up) / 2, half_width_of(1.0) + 1.5, (up + down) / 2, size)
  region = canvas[crop.index]
  du, dv = crop.u - mu, crop.v - mv
  s = np.clip(du / mouth_w, -1, 1)
  centre = -curv * s ** 2
  round_ = 1 - w_t
  profile = (1 - s ** 2) ** (0.25 + 0.3 * round_)
  upper, lower = centre - 0.3 * opening * profile, centre + 0.7 * opening * profile
  lip_scale = 1 + 0.4 * round_
  upper_lip = lip_up * lip_scale * (1 - 0.55 * s ** 2) * (1 - 0.25 * np.exp(-(s / 0.18) ** 2))
  lower_lip = lip_down * lip_scale * (1 - 0.6 * s ** 2)
  inside = _ramp(mouth_w - np.abs(du))
  lips = np.array(identity.lips)
  _paint(region, _band(dv, upper - upper_lip, upper) * inside, 0.92 * lips)
  _paint(region, _band(dv, lower, lower + lower_lip) * inside, np.minimum(1.08 * lips, 1))
  _paint(region, 0.6 * _band(dv, centre - 0.25, centre + 0.25) * inside, 0.35 * lips)
  _paint(region, _band(dv, upper, lower) * inside, MOUTH_INSIDE)
  tongue = 0.35 * np.clip(opening - 0.2 * b, 0, None) * profile
  _paint(region, _band(dv, lower - tongue, lower) * inside, (0.6, 0.28, 0.3))
  teeth = np.clip(opening - 0.15 * b, 0, 0.1 * b) * profile
  _paint(region, _band(dv, upper, np.minimum(upper + teeth, lower)) * inside
         * _ramp(0.65 * mouth_w - np.abs(du)), (0.94, 0.93, 0.88))
  canvas[crop.index] = region

  frames = np.clip(np.round(canvas.transpose(1, 2, 3, 0) * 255), 0, 255).astype(np.uint8)

  # Boxes. Mouth: the rotated mouth box's bounding box. Face: the face ellipse's bounding box
  # (half-extents of a rotated ellipse) grown to hold the mouth box (a wide-open mouth may reach
  # below the chin's ellipse).
  ex = np.sqrt((face_a * pose.cos_roll) ** 2 + (b * pose.sin_roll) ** 2).reshape(n)
  ey = np.sqrt((face_a * pose.sin_roll) ** 2 + (b * pose.cos_roll) ** 2).reshape(n)
  fx, fy = pose.image(face_u, np.zeros_like(face_u))
  fx, fy = fx.reshape(n), fy.reshape(n)
  face_boxes = np.clip(np.stack([fx - ex, fy - ey, fx + ex, fy + ey], axis=1) / size, 0, 1)
  corners = [pose.image(mu + du, mv + dv) for du in (-box_w, box_w) for dv in (-box_up, box_down)]
  xs = np.stack([np.broadcast_to(x, (n, 1, 1)).reshape(n) for x, _ in corners])
  ys = np.stack([np.broadcast_to(y, (n, 1, 1)).reshape(n) for _, y in corners])
  mouth_boxes = np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1) / size
  mouth_boxes = np.clip(mouth_boxes, 0, 1)
  face_boxes = np.concatenate([np.minimum(face_boxes[:, :2], mouth_boxes[:, :2]),
                               np.maximum(face_boxes[:, 2:], mouth_boxes[:, 2:])], axis=1)
  return frames, face_boxes.astype(np.float32), mouth_boxes.astype(np.float32)


def generate_clip(identity: Identity, *, clip_id: int, num_frames: int, image_size: int = 48,
                  speech_seed: int, ambient_seed: int, split: str = "train",
                  emotion: int | None = None) -> schema.Clip:
  """Generates one talking-face clip of `num_frames` frames at 25 fps with 16 kHz audio.

  Args:
    identity: the speaker (see `make_identity`).
    clip_id: id stored in the clip.
    num_frames: number of video frames; the audio has exactly 640 * num_frames samples.
    image_size: frame height and width in pixels.
    speech_seed: seeds the words, their timing and the voice's prosody; drives audio and mouth.
    ambient_seed: seeds blinks, gaze, head motion and (unless given) the emotion.
    split: schema split name stored in the clip.
    emotion: index into schema.EMOTION_NAMES, or None to draw it from `ambient_seed`.

  Returns:
    A schema.Clip with frames, audio, face/mouth boxes, transcript, emotion and actions.
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")
  if emotion is not None and not 0 <= emotion < len(schema.EMOTION_NAMES):
    raise ValueError(f"emotion must be in [0, {len(schema.EMOTION_NAMES)}), got {emotion}")
  speech = _speak(identity, num_frames, np.random.default_rng([speech_seed, 0x5EEC]))
  amb = _ambient(num_frames, np.random.default_rng([ambient_seed, 0xA3B1]), emotion)
  frames, face_boxes, mouth_boxes = _render(identity, speech, amb, image_size)
  actions = np.stack([amb.eye_open < 0.5, np.abs(amb.yaw) > _HEAD_TURN_YAW,
                      amb.curvature > _SMILE_CURVATURE], axis=1).astype(np.uint8)
  return schema.Clip(
      clip_id=clip_id, identity_id=identity.identity_id, split=split, frames=frames,
      audio=speech.audio, face_boxes=face_boxes, mouth_boxes=mouth_boxes,
      transcript=speech.transcript, emotion=amb.emotion, actions=actions)

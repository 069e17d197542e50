"""A synthetic speaker: what stays fixed across its clips (appearance and voice)."""

from __future__ import annotations

import dataclasses

import numpy as np

_SKIN_TONES = np.array([(0.96, 0.80, 0.69), (0.87, 0.67, 0.53), (0.72, 0.52, 0.38),
                        (0.52, 0.36, 0.25), (0.34, 0.23, 0.16)])
_HAIR_COLOURS = np.array([(0.08, 0.07, 0.07), (0.24, 0.15, 0.08), (0.45, 0.30, 0.15),
                          (0.85, 0.70, 0.42), (0.60, 0.25, 0.10), (0.66, 0.66, 0.66)])
_IRIS_COLOURS = np.array([(0.25, 0.15, 0.08), (0.30, 0.45, 0.70), (0.30, 0.50, 0.30),
                          (0.10, 0.08, 0.06)])
HAIR_STYLES = ("short", "long", "crew_cut")


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

"""Ambient motion: blinks, gaze, head pose and the emotion's expression, independent of the speech.

Everything in the picture that moves but is not the mouth's articulation is drawn here from
its own random stream (the clip's `ambient_seed`), so ambient motion and vocal motion (paper
3.1-3.2) are independent by construction. It also yields the clip's per-frame action flags.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from data_pipelines import schema
from data_pipelines.synthetic import random_walk

# Emotion -> (brow raise [x b], brow inner-end raise [x b], mouth-corner curvature [x a],
# eye opening scale); the order follows schema.EMOTION_NAMES.
EMOTION_STYLE = {
    "neutral": (0.0, 0.0, 0.0, 1.0),
    "happy": (0.02, 0.0, 0.13, 0.85),
    "sad": (0.0, 0.06, -0.09, 0.9),
    "angry": (-0.05, -0.07, -0.05, 0.8),
    "surprised": (0.08, 0.0, 0.0, 1.3),
}
CURVATURE_WANDER = 0.03  # bound of the slow wander of the curvature around the emotion's, x a
_SMILE_CURVATURE = 0.06  # corner curvature (x a) above which a frame counts as smiling
_HEAD_TURN_YAW = 0.35  # |yaw| (rad) above which a frame counts as a head turn
_MAX_YAW = 0.55
MAX_ROLL = 0.1


@dataclasses.dataclass
class Ambient:
  """Everything that moves independently of the speech, per frame."""

  emotion: int
  shift_x: np.ndarray  # head translation, fraction of the image [N]
  shift_y: np.ndarray
  yaw: np.ndarray  # rad [N]
  roll: np.ndarray  # rad [N]
  eye_open: np.ndarray  # [N], 1 open, 0 closed (blink), before the emotion's scale
  gaze: np.ndarray  # [N], horizontal gaze in [-1, 1]
  curvature: np.ndarray  # mouth-corner curvature [N], x a (positive: corners up)

  def action_flags(self) -> np.ndarray:
    """Per-frame action flags, uint8 [N, len(schema.ACTION_NAMES)] (blink, head turn, smile)."""
    return np.stack([self.eye_open < 0.5, np.abs(self.yaw) > _HEAD_TURN_YAW,
                     self.curvature > _SMILE_CURVATURE], axis=1).astype(np.uint8)


def draw(num_frames: int, rng: np.random.Generator, emotion: int | None) -> Ambient:
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
  style = EMOTION_STYLE[schema.EMOTION_NAMES[emotion]]
  return Ambient(
      emotion=emotion,
      shift_x=0.09 * np.tanh(0.7 * random_walk.smooth_walk(rng, n, 12.0)),
      shift_y=0.07 * np.tanh(0.7 * random_walk.smooth_walk(rng, n, 12.0)),
      yaw=_MAX_YAW * np.tanh(0.6 * random_walk.smooth_walk(rng, n, 18.0)),
      roll=MAX_ROLL * np.tanh(0.5 * random_walk.smooth_walk(rng, n, 15.0)),
      eye_open=eye_open,
      gaze=np.clip(ndimage.gaussian_filter1d(saccades, 0.7, mode="nearest"), -1, 1),
      curvature=style[2] + CURVATURE_WANDER * np.tanh(0.7 * random_walk.smooth_walk(rng, n, 10.0)),
  )

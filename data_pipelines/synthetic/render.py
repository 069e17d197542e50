"""Draws a speaker's frames from its speech's mouth parameters and its ambient motion.

Rendering is vectorised numpy over frames with analytic anti-aliasing (the coverage
primitives of `raster`). Small features are drawn in per-frame crops that move with the
head. Every mouth layer's coverage is zero outside the frame's mouth box, whose size and
position depend on the head pose alone, so pixels outside the mouth boxes do not depend on
the speech.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import schema
from data_pipelines.synthetic import ambient
from data_pipelines.synthetic import speech
from data_pipelines.synthetic.identity import Identity
from data_pipelines.synthetic.raster import band, ellipse, paint, ramp

MOUTH_INSIDE = (0.1, 0.03, 0.04)  # colour of the mouth's opening (darker than any skin or lips)


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
  holds it at any roll up to ambient.MAX_ROLL and is shifted inside the image at its borders.
  """

  def __init__(self, pose: _Pose, u, v, half_u: float, half_v: float, image_size: int):
    sin = np.sin(ambient.MAX_ROLL)
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


def draw_frames(identity: Identity, spoken: speech.Speech, motion: ambient.Ambient,
                image_size: int):
  """Draws the frames; returns (uint8 frames [N, S, S, 3], face boxes, mouth boxes)."""
  n, size = len(motion.yaw), image_size
  a = identity.face_half_width * size
  b = a * identity.face_aspect

  def col(x) -> np.ndarray:  # per-frame values -> [N, 1, 1]
    return np.asarray(x, np.float32).reshape(-1, 1, 1)

  pose = _Pose(cx=col(size * (0.5 + motion.shift_x)), cy=col(size * (identity.face_center_y
                                                                   + motion.shift_y)),
               cos_roll=col(np.cos(motion.roll)), sin_roll=col(np.sin(motion.roll)),
               cos_yaw=col(np.cos(motion.yaw)), sin_yaw=col(np.sin(motion.yaw)))
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
  paint(canvas, ellipse(x, y - 1.95 * b, 2.0 * a, 0.95 * b), identity.shirt)
  paint(canvas, ramp(0.45 * a - np.abs(x)) * ramp(np.minimum(y - 0.3 * b, 1.75 * b - y)),
        0.8 * skin)

  # Head: hair behind, ears, face, fringe.
  u, v = pose.head(pix[None, None, :], pix[None, :, None])
  face_u, face_a = 0.3 * a * sy, a * (0.8 + 0.2 * cy)  # the face narrows when turned
  hair_u = -0.2 * a * sy  # ... and the far side of the head shows more hair
  hair_rx, hair_ry, hair_v = ((1.12 * a, 1.07 * b, -0.1 * b) if identity.hair_style != "crew_cut"
                              else (1.04 * a, 1.03 * b, -0.04 * b))
  hair_cover = ellipse(u - hair_u, v - hair_v, hair_rx, hair_ry)
  if identity.hair_style == "long":  # covers the ears
    long_hair = (ramp(1.12 * a - np.abs(u - hair_u)) * ramp(np.minimum(v - hair_v, 1.2 * b - v)))
    paint(canvas, np.maximum(hair_cover, long_hair), identity.hair)
  else:
    paint(canvas, hair_cover, identity.hair)
    for side in (-1, 1):
      ear_u = face_u + side * 0.97 * face_a
      crop = _Crop(pose, ear_u, -0.05 * b, 0.14 * a + 1.0, 0.2 * b + 1.0, size)
      region = canvas[crop.index]
      paint(region, ellipse(crop.u - ear_u, crop.v + 0.05 * b, 0.14 * a, 0.2 * b), 0.92 * skin)
      canvas[crop.index] = region
  fu, fv = u - face_u, v
  face = ellipse(fu, fv, face_a, b)
  shade = 1.04 - 0.12 * ((fu / face_a) ** 2 + (fv / b) ** 2)
  paint(canvas, face, shade * skin.reshape(3, 1, 1, 1).astype(np.float32))
  s = fu / face_a
  hairline = -identity.hairline * b + identity.hair_part * a * s + 0.2 * b * s ** 2
  if identity.hair_style == "crew_cut":
    hairline = hairline - 0.25 * b
  paint(canvas, hair_cover * ramp(hairline - v), identity.hair)

  # Facial features sit on the front of the head: they move with yaw and are foreshortened.
  def feature_u(x_frontal: float, depth: float) -> np.ndarray:
    return x_frontal * cy + depth * sy

  style = ambient.EMOTION_STYLE[schema.EMOTION_NAMES[motion.emotion]]
  brow_raise, brow_inner, _, eye_scale = style
  eye_half_width = identity.eye_size * a
  eye_v = -0.12 * b
  eye_open = col(np.clip(motion.eye_open * eye_scale, 0, None))
  gaze = col(motion.gaze)
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
    inside = ramp(ew - np.abs(du))
    sclera = band(dv, -height, height) * inside
    paint(region, sclera, (0.95, 0.94, 0.92))
    iris_r = 0.5 * eye_half_width
    iris = ellipse(du - 0.45 * ew * gaze, dv, iris_r * cy, iris_r) * sclera
    paint(region, iris, identity.iris)
    paint(region, ellipse(du - 0.45 * ew * gaze, dv, 0.5 * iris_r * cy, 0.5 * iris_r) * sclera,
          (0.03, 0.03, 0.03))
    paint(region, 0.85 * band(dv, -height - 0.6, -height) * ramp(1.1 * ew - np.abs(du)),
          (0.1, 0.07, 0.06))
    # Brow: a tapered band; s_in = +1 at its inner end (towards the nose).
    brow_len = 1.3 * eye_half_width * cy
    bu = feature_u(side * identity.eye_spacing * a, 0.8 * a)
    s_in = np.clip(-side * (crop.u - bu) / brow_len, -1, 1)
    centre = (eye_v - 0.2 * b - brow_raise * b - 0.04 * b * (1 - s_in ** 2)
              - brow_inner * b * (s_in + 1) / 2)
    thick = identity.brow_thickness * b * (0.7 + 0.15 * (1 + s_in))  # thicker at the inner end
    paint(region, band(crop.v, centre - thick, centre + thick)
          * ramp(brow_len - np.abs(crop.u - bu)), 0.7 * np.array(identity.hair))
    canvas[crop.index] = region

  # Nose: soft shadow and nostrils.
  nu, nv = feature_u(0.0, 1.0 * a), 0.18 * b
  crop = _Crop(pose, nu, nv, 0.2 * a + 1.0, 0.1 * b + 1.0, size)
  region = canvas[crop.index]
  du, dv = crop.u - nu, crop.v - nv
  paint(region, 0.5 * ellipse(du, dv, 0.14 * a * cy, 0.07 * b), 0.8 * skin)
  for side in (-1, 1):
    paint(region, 0.7 * ellipse(du - side * 0.09 * a * cy, dv, 0.05 * a * cy, 0.035 * b),
          0.45 * skin)
  canvas[crop.index] = region

  # Mouth: lips around a dark opening, teeth and tongue showing when wide open.
  def half_width_of(width):  # mouth half-width (px) for a width parameter in [0, 1]
    return a * identity.mouth_scale * (0.40 + 0.16 * width)

  max_open, lip_up, lip_down = 0.44 * b, 0.09 * b, 0.12 * b  # opening and lip thicknesses (px)
  mu, mv = feature_u(0.0, 0.8 * a), 0.48 * b
  w_t, o_t = col(spoken.mouth_width), col(spoken.mouth_open)
  curv = col(motion.curvature) * a
  mouth_w = half_width_of(w_t) * cy
  opening = o_t * max_open
  box_w = half_width_of(1.0) * cy + 1.5
  # The mouth box bounds every mouth shape (opening, rounded lips, corner curvature) plus the
  # 1 px anti-aliasing ramp, so nothing the speech changes is drawn outside it.
  box_up = 0.3 * max_open + 1.4 * lip_up + np.maximum(curv, 0) + 1.0
  box_down = 0.7 * max_open + 1.4 * lip_down + np.maximum(-curv, 0) + 1.0
  curvatures = [c[2] for c in ambient.EMOTION_STYLE.values()]
  up = 0.3 * max_open + 1.4 * lip_up + (max(curvatures) + ambient.CURVATURE_WANDER) * a + 1.0
  down = 0.7 * max_open + 1.4 * lip_down - (min(curvatures) - ambient.CURVATURE_WANDER) * a + 1.0
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
  inside = ramp(mouth_w - np.abs(du))
  lips = np.array(identity.lips)
  paint(region, band(dv, upper - upper_lip, upper) * inside, 0.92 * lips)
  paint(region, band(dv, lower, lower + lower_lip) * inside, np.minimum(1.08 * lips, 1))
  paint(region, 0.6 * band(dv, centre - 0.25, centre + 0.25) * inside, 0.35 * lips)
  paint(region, band(dv, upper, lower) * inside, MOUTH_INSIDE)
  tongue = 0.35 * np.clip(opening - 0.2 * b, 0, None) * profile
  paint(region, band(dv, lower - tongue, lower) * inside, (0.6, 0.28, 0.3))
  teeth = np.clip(opening - 0.15 * b, 0, 0.1 * b) * profile
  paint(region, band(dv, upper, np.minimum(upper + teeth, lower)) * inside
        * ramp(0.65 * mouth_w - np.abs(du)), (0.94, 0.93, 0.88))
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

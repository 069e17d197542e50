"""Square face crops and the per-frame face and mouth boxes that the record carries.

The crop window follows a smoothed face track: a square of side (1 + 2 margin) x the
longer side of the face box, centred on the box, resized to `size` x `size` (parts
outside the frame are filled with SyncNet's grey, 110). The face box and the mouth box
are then expressed in the schema's convention: (x0, y0, x1, y1) normalised by the crop
width and height, clipped to [0, 1]. The face-preserving mask weights of the training
(`data_pipelines.face_weights`: mouth first, then the lower face, then the face)
are computed from exactly these two boxes.

The mouth box comes from the two mouth corners when the detector gives landmarks (a box
1.5 corner-distances wide and 1.1 high, reaching lower than higher to hold an open jaw);
otherwise from the face box's geometry (its lower-middle part: the middle half in x,
0.6 to 0.92 of its height in y, where the mouth of an upright face sits).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FILL = (110, 110, 110)


def crop_windows(face_boxes: np.ndarray, margin: float) -> np.ndarray:
  """Square crop windows [n, 4] (pixels, float) around face boxes [n, 4]."""
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  centre = (face_boxes[:, :2] + face_boxes[:, 2:]) / 2
  half = (1 + 2 * margin) * (face_boxes[:, 2:] - face_boxes[:, :2]).max(axis=1, keepdims=True) / 2
  return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def mouth_boxes(face_boxes: np.ndarray, mouth_corners: np.ndarray | None) -> np.ndarray:
  """Mouth boxes [n, 4] (pixels) from mouth corners [n, 2, 2], or from face boxes if None."""
  if mouth_corners is None:
    x0, y0, x1, y1 = face_boxes.T
    w, h = x1 - x0, y1 - y0
    return np.stack([x0 + 0.25 * w, y0 + 0.6 * h, x1 - 0.25 * w, y0 + 0.92 * h], 1).astype(
        np.float32)
  centre = mouth_corners.mean(axis=1)
  width = np.linalg.norm(mouth_corners[:, 1] - mouth_corners[:, 0], axis=1)
  return np.stack([centre[:, 0] - 0.75 * width, centre[:, 1] - 0.45 * width,
                   centre[:, 0] + 0.75 * width, centre[:, 1] + 0.65 * width], 1).astype(np.float32)


def normalise(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
  """Pixel boxes [n, 4] -> the same boxes in their crop windows [n, 4], in [0, 1]."""
  side = (windows[:, 2:] - windows[:, :2]).repeat(2, axis=1)
  origin = np.tile(windows[:, :2], 2)
  return np.clip((boxes - origin) / side, 0.0, 1.0).astype(np.float32)


def crop_frame(image: np.ndarray, window: np.ndarray, size: int) -> np.ndarray:
  """The square `window` (x0, y0, x1, y1, float pixels) of `image`, resized to [size, size, 3].

  Sub-pixel windows are honoured (a smoothed track moves smoothly); the resampling is
  Pillow's antialiased bicubic filter.
  """
  h, w = image.shape[:2]
  x0, y0, x1, y1 = (float(v) for v in window)
  scale = size / (x1 - x0)
  out = Image.new("RGB", (size, size), FILL)
  # Output pixels [ox0, ox1) x [oy0, oy1) see the inside of the frame.
  ox0, oy0 = round(max(0.0, -x0) * scale), round(max(0.0, -y0) * scale)
  ox1, oy1 = round(min(size, (w - x0) * scale)), round(min(size, (h - y0) * scale))
  if ox1 > ox0 and oy1 > oy0:
    source = (max(0.0, x0 + ox0 / scale), max(0.0, y0 + oy0 / scale),
              min(float(w), x0 + ox1 / scale), min(float(h), y0 + oy1 / scale))
    part = Image.fromarray(image).resize((ox1 - ox0, oy1 - oy0), Image.BICUBIC, box=source)
    out.paste(part, (ox0, oy0))
  return np.asarray(out)

"""Scene cuts from frame-to-frame change of small grey thumbnails.

A cut between frames t - 1 and t is declared where the mean absolute difference of their
thumbnails is both large in absolute terms and several times the typical change around it
(a rolling median), the adaptive rule of PySceneDetect's AdaptiveDetector: a fast pan or a
talking head moving changes every frame a little, a cut changes one frame pair a lot.
Face tracks never cross a cut (as in SyncNet's pipeline).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

THUMBNAIL = 32  # thumbnails are THUMBNAIL x THUMBNAIL grey levels


def thumbnail(image: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> float32 grey [THUMBNAIL, THUMBNAIL] (block means)."""
  grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  h, w = grey.shape
  ys = np.linspace(0, h, THUMBNAIL + 1).astype(int)
  xs = np.linspace(0, w, THUMBNAIL + 1).astype(int)
  return np.add.reduceat(np.add.reduceat(grey, ys[:-1], axis=0), xs[:-1], axis=1) / (
      np.diff(ys)[:, None] * np.diff(xs)[None, :])


def find_cuts(thumbnails: np.ndarray, *, min_change: float = 20.0, ratio: float = 4.0,
              window: int = 12) -> list[int]:
  """Frame indices t where a new scene starts (0 excluded), in order.

  Args:
    thumbnails: float [N, h, w] from `thumbnail`.
    min_change: smallest mean absolute grey-level change (0..255) that can be a cut.
    ratio: a cut's change must exceed `ratio` times the median change of the `window`
      frame pairs on each side of it.
    window: half-width of that neighbourhood.
  """
  if len(thumbnails) < 2:
    return []
  change = np.abs(np.diff(thumbnails, axis=0)).mean(axis=(1, 2))  # change[t-1]: t-1 -> t
  neighbours = np.ones(2 * window + 1, bool)
  neighbours[window] = False  # the pair itself is not its own context
  typical = ndimage.median_filter(change, footprint=neighbours, mode="nearest")
  cut = (change >= min_change) & (change > ratio * typical)
  return [int(t) + 1 for t in np.flatnonzero(cut)]


def scene_ranges(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
  """[start, stop) of every scene given the cut positions."""
  bounds = [0, *cuts, num_frames]
  return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

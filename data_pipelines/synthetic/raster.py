"""Anti-aliased coverage of shapes on a pixel grid, and compositing onto planar RGB.

Coverage is analytic: ellipses use a first-order signed distance with a 1 px ramp, and
horizontal bands are exact along y, so sub-pixel changes of a shape change pixel values.
"""

from __future__ import annotations

import numpy as np


def band(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """Coverage of the band lo < y < hi by a unit pixel centred at y (exact along y)."""
  return np.clip(np.minimum(y + 0.5, hi) - np.maximum(y - 0.5, lo), 0.0, 1.0)


def ramp(d: np.ndarray) -> np.ndarray:
  """Coverage of a pixel whose centre lies d px inside an edge (d < 0: outside); 1 px ramp."""
  return np.clip(d + 0.5, 0.0, 1.0)


def ellipse(x: np.ndarray, y: np.ndarray, rx, ry) -> np.ndarray:
  """Coverage of the ellipse (x/rx)^2 + (y/ry)^2 < 1, from its first-order signed distance."""
  q = (x / rx) ** 2 + (y / ry) ** 2
  grad = 2 * np.sqrt((x / rx ** 2) ** 2 + (y / ry ** 2) ** 2)
  return ramp((1 - q) / np.maximum(grad, 1e-6))


def paint(region: np.ndarray, alpha: np.ndarray, colour) -> None:
  """Composites `colour` (RGB or [3, ...]) with coverage `alpha` over planar `region` [3, ...]."""
  colour = np.asarray(colour, np.float32)
  if colour.ndim == 1:
    colour = colour.reshape(3, *([1] * (region.ndim - 1)))
  region += alpha.astype(np.float32) * (colour - region)

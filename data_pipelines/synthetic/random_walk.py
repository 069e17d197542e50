"""Smooth random walks: the slow random signals of the synthetic speech and ambient motion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_walk(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
  """Smooth stationary random walk of n steps (Gaussian-filtered noise) with unit variance."""
  x = ndimage.gaussian_filter1d(rng.normal(0, 1, n + 8 * int(sigma)), sigma,
                                mode="wrap")[:n]
  return x * np.sqrt(2 * np.sqrt(np.pi) * sigma)

"""Face and mouth boxes on patch-cell edges: the evaluation view's ties, for the tests of
`data_pipelines.face_weights` and of the PyTorch bridge's parity with the JAX evaluator."""

from __future__ import annotations

import numpy as np


def cell_edge_boxes(rng: np.random.Generator, n: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
  """(face, mouth) float32 [n, 4] (x0, y0, x1, y1): per frame a face box of whole cells, an even
  number of rows tall (its lower half whole cells too), and a mouth box of whole cells in that
  lower half; half the faces span the image's width and half the mouths the face's. Every
  patch is wholly inside or outside each region, so its weight is a sum of the region steps, and
  rows of patches share one weight: the view's cut often falls among equal weights."""
  wide = rng.random((2, n)) < 0.5
  x0 = np.where(wide[0], 0, rng.integers(0, grid, n))
  x1 = np.where(wide[0], grid, rng.integers(x0 + 1, grid + 1))
  rows = 2 * rng.integers(1, grid // 2 + 1, n)
  y0 = rng.integers(0, grid - rows + 1)
  y1 = y0 + rows
  mx0 = np.where(wide[1], x0, rng.integers(x0, x1))
  mx1 = np.where(wide[1], x1, rng.integers(mx0 + 1, x1 + 1))
  my0 = rng.integers(y0 + rows // 2, y1)
  my1 = rng.integers(my0 + 1, y1 + 1)

  def box(*edges):
    return (np.stack(edges, axis=1) / grid).astype(np.float32)

  return box(x0, y0, x1, y1), box(mx0, my0, mx1, my1)

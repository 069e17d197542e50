"""Per-patch face weights of the face-preserving view (paper 3.2), for any numpy-like namespace.

Imports no jax: `masking.face_weights` evaluates this with `jax.numpy` inside the jitted views,
and the PyTorch bridge (`synclipmae_torch`) with numpy on the host, so both pick the same patches.
Boxes are (x0, y0, x1, y1) in [0, 1] (`data_pipelines.schema`); patches in row-major order.
"""

from __future__ import annotations

import numpy as np


def box_coverage(boxes, grid: int, xp=np):
  """Fraction of each patch cell covered by each box: boxes [F, 4] -> [F, grid*grid].

  Box edges are scaled to cell units and compared with the integer cell edges, so a cell inside
  a box has coverage exactly 1 and equal boxes give equal coverage under any compiler's rounding
  (ties among such cells are then broken by index alike in numpy and XLA).
  """
  lo = xp.arange(grid, dtype=xp.float32)
  hi = lo + 1.0

  def overlap(a0, a1):  # [F] box interval against every cell interval -> [F, grid]
    return xp.maximum(xp.minimum(a1[:, None] * grid, hi) - xp.maximum(a0[:, None] * grid, lo), 0.0)

  ox = overlap(boxes[:, 0], boxes[:, 2])
  oy = overlap(boxes[:, 1], boxes[:, 3])
  return (oy[:, :, None] * ox[:, None, :]).reshape(boxes.shape[0], grid * grid)


def face_weights(face_boxes, mouth_boxes, grid: int, *, background: float, face: float,
                 lower_face: float, mouth: float, xp=np):
  """Per-patch keep weight [F, grid*grid] for the face-preserving bypass.

  A patch's weight interpolates by coverage: background, then face, then the lower half
  of the face, then the mouth box (mouth / lower face first, as the paper's face-preserving
  view retains facial regions with higher keep probability).
  """
  lower = xp.stack([face_boxes[:, 0], 0.5 * (face_boxes[:, 1] + face_boxes[:, 3]),
                    face_boxes[:, 2], face_boxes[:, 3]], axis=1)
  w = background + (face - background) * box_coverage(face_boxes, grid, xp)
  w = w + (lower_face - face) * box_coverage(lower, grid, xp)
  return w + (mouth - lower_face) * box_coverage(mouth_boxes, grid, xp)

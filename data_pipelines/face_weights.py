"""Per-patch face weights from a record's face and mouth boxes (paper 3.2, face-preserving bypass).

The face-preserving view of SyncLipMAE's two-bypass masking keeps facial patches, the mouth
first, with higher probability. Every record carries per-frame face and mouth boxes
(`schema`: (x0, y0, x1, y1) normalised to [0, 1]); this module turns them into a keep weight
for each cell of a square patch grid. It is part of the data's definition: the training's
masking, its evaluation and the data preview all read the same map from here.

The functions take the array module as `xp`: numpy by default (the preview), `jax.numpy`
inside jitted code (the trainer passes `xp=jnp`). Both run the same element-wise operations
in float32; their results agree to a few ulp (XLA may fuse the arithmetic differently).
"""

from __future__ import annotations

import types

import numpy as np

# Keep weight of a patch fully inside each region (paper 3.2: mouth, then the lower face,
# then the face are kept with higher probability than the background).
DEFAULT_WEIGHTS = types.MappingProxyType(dict(background=1.0, face=2.0, lower_face=4.0, mouth=16.0))


def box_coverage(boxes, grid: int, *, xp=np):
  """Fraction of each patch cell covered by each box: boxes float32 [F, 4] -> [F, grid*grid].

  Cells are in row-major order (the order of patchified frames); cell (r, c) spans
  [c / grid, (c + 1) / grid] x [r / grid, (r + 1) / grid] of the normalised image.
  """
  edges = xp.arange(grid + 1, dtype=xp.float32) / grid
  lo, hi = edges[:-1], edges[1:]

  def overlap(a0, a1):  # [F] box interval against every cell interval -> [F, grid]
    return xp.clip(xp.minimum(a1[:, None], hi) - xp.maximum(a0[:, None], lo), 0.0, None) * grid

  ox = overlap(boxes[:, 0], boxes[:, 2])
  oy = overlap(boxes[:, 1], boxes[:, 3])
  return (oy[:, :, None] * ox[:, None, :]).reshape(boxes.shape[0], grid * grid)


def patch_weights(face_boxes, mouth_boxes, grid: int, *, background: float, face: float,
                  lower_face: float, mouth: float, xp=np):
  """Per-patch keep weight float32 [F, grid*grid] for the face-preserving bypass.

  A patch's weight interpolates by coverage: background, then face, then the lower half
  of the face box, then the mouth box: each region adds its step over the previous one times
  the fraction of the patch it covers, so a patch wholly inside the mouth box, itself in the
  lower half of the face box, weighs `mouth`.

  Args:
    face_boxes: float32 [F, 4], (x0, y0, x1, y1) in [0, 1].
    mouth_boxes: float32 [F, 4], same convention.
    grid: patches per side of the (square) frame.
    background, face, lower_face, mouth: keep weights of the regions (`DEFAULT_WEIGHTS`).
    xp: the array module of the inputs (numpy, or jax.numpy inside jitted code).
  """
  lower = xp.stack([face_boxes[:, 0], 0.5 * (face_boxes[:, 1] + face_boxes[:, 3]),
                    face_boxes[:, 2], face_boxes[:, 3]], axis=1)
  w = background + (face - background) * box_coverage(face_boxes, grid, xp=xp)
  w = w + (lower_face - face) * box_coverage(lower, grid, xp=xp)
  return w + (mouth - lower_face) * box_coverage(mouth_boxes, grid, xp=xp)

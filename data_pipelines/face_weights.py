"""Per-patch face weights from a record's face and mouth boxes (paper 3.2, face-preserving bypass).

The face-preserving view of SyncLipMAE's two-bypass masking keeps facial patches, the mouth
first, with higher probability. Every record carries per-frame face and mouth boxes
(`schema`: (x0, y0, x1, y1) normalised to [0, 1]); this module turns them into a keep weight
for each cell of a square patch grid. It is part of the data's definition: the training's
masking, its evaluation and the data preview all read the same map from here.

The functions take the array module as `xp`: numpy by default (the preview and the PyTorch
bridge, `synclipmae_torch.tokens`), `jax.numpy` inside jitted code (the trainer and the sync
evaluator pass `xp=jnp`). The evaluation view keeps the k patches of highest weight, so equal
weights must be equal in every back end and their ties broken alike: coverage is measured against
integer cell edges (a cell wholly inside a box covers exactly 1, wholly outside exactly 0, and a
partial cell's fraction is the same correctly rounded operations everywhere), and `top_k` breaks
ties by patch index explicitly. A patch whose coverages are all 0 or 1 therefore weighs the same
float32 in every IEEE float32 back end (numpy, XLA); a partially covered patch's weight may
differ by an ulp (XLA fuses a multiply-add into one rounding), which can only reorder two patches
whose weights differ by less than that.
"""

from __future__ import annotations

import types

import numpy as np

# Keep weight of a patch fully inside each region (paper 3.2: mouth, then the lower face,
# then the face are kept with higher probability than the background).
DEFAULT_WEIGHTS = types.MappingProxyType(dict(background=1.0, face=2.0, lower_face=4.0, mouth=16.0))


def box_coverage(boxes, grid: int, *, xp=np):
  """Fraction of each patch cell covered by each box: boxes [F, 4] -> float32 [F, grid*grid].

  Cells are in row-major order (the order of patchified frames); cell (r, c) spans
  [c / grid, (c + 1) / grid] x [r / grid, (r + 1) / grid] of the normalised image. Measured in
  cell units, where cell j of an axis spans the integers [j, j + 1]: a box's edges are scaled by
  `grid` (one float32 multiplication) and each axis's covered fraction is
  min(x1 * grid, j + 1) - max(x0 * grid, j), at least 0 (at most 1 by construction). A cell
  wholly inside the box gets exactly (j + 1) - j = 1 and one outside exactly 0, whatever the
  back end; every other value is one correctly rounded subtraction (and the two axes' product
  one multiplication) of the same float32 operands, so numpy and XLA give the same bits.
  """
  boxes = xp.asarray(boxes, dtype=xp.float32)
  edges = xp.arange(grid, dtype=xp.float32)  # cell j's lower edge, in cell units

  def overlap(a0, a1):  # [F] box interval against every cell [j, j + 1] -> [F, grid]
    hi = xp.minimum(a1[:, None] * grid, edges + 1)
    return xp.maximum(hi - xp.maximum(a0[:, None] * grid, edges), 0.0)

  ox = overlap(boxes[:, 0], boxes[:, 2])
  oy = overlap(boxes[:, 1], boxes[:, 3])
  return (oy[:, :, None] * ox[:, None, :]).reshape(boxes.shape[0], grid * grid)


def top_k(scores, k: int, *, xp=np):
  """Indices int [F, k] of each row's k highest scores, ties to the lower index, ascending.

  The tie-break is explicit, a stable sort of the negated scores (equal scores keep their index
  order), rather than left to a top-k primitive: torch.topk leaves the choice among equal values
  unspecified. With face weights it is the deterministic evaluation view (equal weights are
  common: every patch wholly inside the mouth box weighs `mouth`), so the JAX evaluator and the
  PyTorch bridge keep the same patches; the training's masks use it too (`synclipmae_jax.masking`).
  """
  return xp.sort(xp.argsort(-scores, axis=-1, stable=True)[..., :k], axis=-1)


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
  face_boxes = xp.asarray(face_boxes, dtype=xp.float32)
  mouth_boxes = xp.asarray(mouth_boxes, dtype=xp.float32)
  lower = xp.stack([face_boxes[:, 0], 0.5 * (face_boxes[:, 1] + face_boxes[:, 3]),
                    face_boxes[:, 2], face_boxes[:, 3]], axis=1)
  w = background + (face - background) * box_coverage(face_boxes, grid, xp=xp)
  w = w + (lower_face - face) * box_coverage(lower, grid, xp=xp)
  return w + (mouth - lower_face) * box_coverage(mouth_boxes, grid, xp=xp)

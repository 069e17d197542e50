"""Resizing a square grid of position embeddings to the training grid.

Checkpoints are pretrained at another resolution than ours (Sapiens at 1024 px: a 64 x 64 grid of
16-px patches; SyncLipMAE trains at 224 px: 14 x 14). The grid of embeddings [n * n, D]
(row-major, as the patches) is resized bicubically, as the Sapiens/mmpretrain, timm and
transformers ViTs do when they change resolution. Downsampling 64 -> 14 uses the antialiased
filter (PyTorch's `antialias=True`, as timm's `resample_abs_pos_embed` and transformers' DINOv2
do): without it, the high-frequency sin-cos channels alias.
"""

from __future__ import annotations

import math

import numpy as np


def grid_size(num_positions: int) -> int | None:
  """n with n * n == num_positions, or None."""
  n = math.isqrt(num_positions)
  return n if n * n == num_positions else None


def resize(table: np.ndarray, grid: int) -> np.ndarray:
  """[n * n, D] -> [grid * grid, D] with `torch.nn.functional.interpolate(mode="bicubic",
  align_corners=False, antialias=True)` on the (D, n, n) image; a copy when n == grid."""
  n = grid_size(table.shape[0])
  if table.ndim != 2 or n is None:
    raise ValueError(f"expected a square grid of embeddings [n * n, D], got shape {table.shape}")
  if n == grid:
    return np.array(table, np.float32)
  import torch  # the optional bridge dependency (requirements-bridge.txt)
  image = torch.from_numpy(np.ascontiguousarray(table, np.float32)).T.reshape(1, -1, n, n)
  resized = torch.nn.functional.interpolate(
      image, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True)
  return resized.reshape(table.shape[1], grid * grid).T.numpy().copy()

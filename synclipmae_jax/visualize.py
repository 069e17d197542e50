"""Image grids for TensorBoard: original / masked view / video-driven / audio-driven
reconstruction (when the run decodes it), one row per frame."""

from __future__ import annotations

import numpy as np

from synclipmae_jax import masking, objective


def _to_uint8(patches_normalized: np.ndarray, patch: int, grid: int) -> np.ndarray:
  images = np.asarray(masking.unpatchify(patches_normalized, patch, grid))
  images = images * objective.PIXEL_STD + objective.PIXEL_MEAN
  return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def reconstruction_grid(targets, keep, pred_video, pred_audio, *, patch: int, grid: int,
                        norm_pix: bool, num_rows: int = 4, scale: int = 2) -> np.ndarray:
  """targets / predictions [F, N, P] (normalised pixels), keep [F, k] -> uint8 [rows*H, 4*W, 3]
  (3*W without an audio-driven pass: pred_audio None).

  Visible patches are pasted back into both reconstructions, as in MAE's figures; with
  `norm_pix` the predictions are de-normalised with each target patch's mean and std.
  """
  targets, keep = np.asarray(targets[:num_rows]), np.asarray(keep[:num_rows])
  visible = np.asarray(masking.keep_to_mask(keep, targets.shape[1]))[..., None]
  rows = []
  for pred in (p for p in (pred_video, pred_audio) if p is not None):
    pred = np.asarray(pred[:num_rows])
    if norm_pix:
      mean = targets.mean(-1, keepdims=True)
      std = np.sqrt(targets.var(-1, keepdims=True) + 1e-6)
      pred = pred * std + mean
    rows.append(np.where(visible, targets, pred))
  masked = np.where(visible, targets, (0.5 - objective.PIXEL_MEAN.mean()) / objective.PIXEL_STD.mean())
  panels = [_to_uint8(x, patch, grid) for x in (targets, masked, *rows)]
  grid_image = np.concatenate([np.concatenate(list(p), axis=0) for p in panels], axis=1)
  return grid_image.repeat(scale, axis=0).repeat(scale, axis=1)

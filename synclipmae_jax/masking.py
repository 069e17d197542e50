"""Two-bypass face-aware masking (paper 3.2) with static shapes.

Both bypasses keep the same number k of patches per frame, so every array has a static
shape: bypass 1 keeps a uniform random subset, bypass 2 a subset drawn without replacement
with probability proportional to a per-patch face weight (Gumbel top-k: the k largest of
log w + Gumbel noise are a weighted sample without replacement). The face weights come from
the per-frame face and mouth boxes that every record carries.
"""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[..., H, W, C] -> [..., (H/p)*(W/p), p*p*C], patches in row-major order."""
  return einops.rearrange(images, "... (h p) (w q) c -> ... (h w) (p q c)", p=patch, q=patch)


def unpatchify(patches: jax.Array, patch: int, grid: int) -> jax.Array:
  """Inverse of `patchify` for a square grid."""
  return einops.rearrange(patches, "... (h w) (p q c) -> ... (h p) (w q) c",
                          h=grid, w=grid, p=patch, q=patch)


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """k = number of visible patches per frame; at least one."""
  return max(1, int(round(num_patches * (1.0 - mask_ratio))))


def _box_coverage(boxes: jax.Array, grid: int) -> jax.Array:
  """Fraction of each patch cell covered by each box: boxes [F, 4] -> [F, grid*grid]."""
  edges = jnp.arange(grid + 1, dtype=jnp.float32) / grid
  lo, hi = edges[:-1], edges[1:]

  def overlap(a0, a1):  # [F] box interval against every cell interval -> [F, grid]
    return jnp.clip(jnp.minimum(a1[:, None], hi) - jnp.maximum(a0[:, None], lo), 0.0) * grid

  ox = overlap(boxes[:, 0], boxes[:, 2])
  oy = overlap(boxes[:, 1], boxes[:, 3])
  return (oy[:, :, None] * ox[:, None, :]).reshape(boxes.shape[0], grid * grid)


def face_weights(face_boxes: jax.Array, mouth_boxes: jax.Array, grid: int, *,
                 background: float, face: float, lower_face: float, mouth: float) -> jax.Array:
  """Per-patch keep weight [F, grid*grid] for the face-preserving bypass.

  A patch's weight interpolates by coverage: background, then face, then the lower half
  of the face, then the mouth box (mouth / lower face first, as the paper's face-preserving
  view retains facial regions with higher keep probability).
  """
  lower = face_boxes.at[:, 1].set(0.5 * (face_boxes[:, 1] + face_boxes[:, 3]))
  w = background + (face - background) * _box_coverage(face_boxes, grid)
  w = w + (lower_face - face) * _box_coverage(lower, grid)
  return w + (mouth - lower_face) * _box_coverage(mouth_boxes, grid)


def uniform_keep(rng: jax.Array, num_frames: int, num_patches: int, k: int) -> jax.Array:
  """Bypass 1: k patch indices per frame, a uniform random subset, sorted. [F, k] int32."""
  scores = jax.random.uniform(rng, (num_frames, num_patches))
  return jnp.sort(jax.lax.top_k(scores, k)[1], axis=-1)


def weighted_keep(rng: jax.Array, weights: jax.Array, k: int) -> jax.Array:
  """Bypass 2: k indices per frame drawn without replacement with probability ~ weights."""
  scores = jnp.log(weights) + jax.random.gumbel(rng, weights.shape)
  return jnp.sort(jax.lax.top_k(scores, k)[1], axis=-1)


def top_weight_keep(weights: jax.Array, k: int) -> jax.Array:
  """Deterministic face-preserving view (evaluation): the k highest-weight patches."""
  return jnp.sort(jax.lax.top_k(weights, k)[1], axis=-1)


def keep_to_mask(keep: jax.Array, num_patches: int) -> jax.Array:
  """[F, k] indices -> [F, N] bool, True where the patch is visible."""
  return jnp.zeros(keep.shape[:-1] + (num_patches,), bool).at[
      jnp.arange(keep.shape[0])[:, None], keep].set(True)

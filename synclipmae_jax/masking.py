"""Two-bypass face-aware masking (paper 3.2) with static shapes.

Both bypasses keep the same number k of patches per frame, so every array has a static
shape: bypass 1 keeps a uniform random subset, bypass 2 a subset drawn without replacement
with probability proportional to a per-patch face weight (Gumbel top-k: the k largest of
log w + Gumbel noise are a weighted sample without replacement). The face weights come from
the per-frame face and mouth boxes that every record carries (`data_pipelines.face_weights`).
Every keep takes the k highest scores with ties to the lower patch index (`face_weights.top_k`):
the deterministic evaluation view's choice among equal weights is then the PyTorch bridge's.
"""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp

from data_pipelines import face_weights


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


def uniform_keep(rng: jax.Array, num_frames: int, num_patches: int, k: int) -> jax.Array:
  """Bypass 1: k patch indices per frame, a uniform random subset, sorted. [F, k] int32."""
  scores = jax.random.uniform(rng, (num_frames, num_patches))
  return face_weights.top_k(scores, k, xp=jnp)


def weighted_keep(rng: jax.Array, weights: jax.Array, k: int) -> jax.Array:
  """Bypass 2: k indices per frame drawn without replacement with probability ~ weights."""
  scores = jnp.log(weights) + jax.random.gumbel(rng, weights.shape)
  return face_weights.top_k(scores, k, xp=jnp)


def top_weight_keep(weights: jax.Array, k: int) -> jax.Array:
  """Deterministic face-preserving view (evaluation): the k highest-weight patches, ties to the
  lower index, ascending [F, k]."""
  return face_weights.top_k(weights, k, xp=jnp)


def keep_to_mask(keep: jax.Array, num_patches: int) -> jax.Array:
  """[F, k] indices -> [F, N] bool, True where the patch is visible."""
  return jnp.zeros(keep.shape[:-1] + (num_patches,), bool).at[
      jnp.arange(keep.shape[0])[:, None], keep].set(True)

"""UniSync's training samples (../shared/papers/unisync_summary.txt, Figure 3), cut from the
pretraining pipeline's batches: windows of T frames with their per-frame frozen audio features.

For every clip of the batch (an anchor) a video window of K frames starts at a random frame s; its
audio samples are
- the positive: the audio features of the same K frames;
- a same-speaker negative with temporal overlap: the same clip's audio shifted by d frames,
  MIN_OVERLAP_SHIFT <= |d| <= K - 1 (shifts of one frame are left out: too close to call);
- a same-speaker negative without overlap: shifted by |d| >= K;
- a cross-speaker negative: the same K frames of the next clip in the batch whose identity differs
  (identity-aware batches hold runs of clips of one identity: the partner is the first clip after
  the run).
Every window lies inside the T frames, so T >= 2 K is needed (`validate`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_OVERLAP_SHIFT = 2
KINDS = ("overlap", "apart", "cross_speaker")  # the negatives' order along axis 1


def validate(window_frames: int, k: int) -> list[str]:
  """What is wrong with cutting K-frame samples from T-frame windows (empty if nothing)."""
  if k < MIN_OVERLAP_SHIFT + 1:
    return [f"UniSync's window K={k} must be >= {MIN_OVERLAP_SHIFT + 1} (an overlapping shift of "
            f"{MIN_OVERLAP_SHIFT}..K-1 frames)"]
  if window_frames < 2 * k:
    return [f"data.window_frames={window_frames} must be >= 2 K = {2 * k}: a non-overlapping "
            "shift must fit in the window"]
  return []


def _shift(rng, starts, last_start: int, low: int, high: int):
  """Per anchor, a shift d uniform over the d with low <= |d| <= high and 0 <= start + d <= last."""
  d = jnp.arange(-last_start, last_start + 1)
  ok = (jnp.abs(d) >= low) & (jnp.abs(d) <= high)
  ok = ok[None, :] & (starts[:, None] + d[None, :] >= 0) & (starts[:, None] + d[None, :] <= last_start)
  return d[jax.random.categorical(rng, jnp.where(ok, 0.0, -jnp.inf))]


def _windows(x, starts, k: int):
  """x [B, T, ...] -> [B, K, ...]: the K frames from each row's start."""
  return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, k, axis=0))(x, starts)


def cross_speaker_partner(identity: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per clip, the index of the next clip (cyclically) with another identity, and whether one
  exists (False when the whole batch is one identity; the partner is then the next clip, or the
  clip itself in a batch of one)."""
  b = identity.shape[0]
  if b == 1:
    return jnp.zeros(1, jnp.int32), jnp.zeros(1, bool)
  index = (jnp.arange(b)[:, None] + jnp.arange(1, b)[None, :]) % b  # [B, B - 1]
  other = identity[index] != identity[:, None]
  first = jnp.argmax(other, axis=1)
  return index[jnp.arange(b), first], other.any(axis=1)


def training_samples(rng, frames: jax.Array, features: jax.Array, identity: jax.Array,
                     k: int) -> dict:
  """The anchors' video windows and their audio samples.

  Args:
    rng: a PRNG key.
    frames: [B, T, H, W, 3] uint8.
    features: [B, T, L, C] per-frame frozen audio features of the same T frames.
    identity: [B] int identity ids.
    k: frames per sample window.

  Returns:
    {"frames": [B, K, H, W, 3], "positive": [B, K, L, C], "negatives": [B, 3, K, L, C] (KINDS
    order), "starts": [B], "shifts": [B, 2] (the same-speaker negatives' d), "partner": [B],
    "cross_speaker": [B] bool (the partner's identity differs)}.
  """
  b, t = frames.shape[:2]
  errors = validate(t, k)
  if errors:
    raise ValueError("; ".join(errors))
  last = t - k
  k_start, k_overlap, k_apart = jax.random.split(rng, 3)
  starts = jax.random.randint(k_start, (b,), 0, last + 1)
  overlap = _shift(k_overlap, starts, last, MIN_OVERLAP_SHIFT, k - 1)
  apart = _shift(k_apart, starts, last, k, last)
  partner, cross = cross_speaker_partner(identity)
  negatives = jnp.stack([_windows(features, starts + overlap, k),
                         _windows(features, starts + apart, k),
                         _windows(features[partner], starts, k)], axis=1)
  return {"frames": _windows(frames, starts, k), "positive": _windows(features, starts, k),
          "negatives": negatives, "starts": starts, "shifts": jnp.stack([overlap, apart], axis=1),
          "partner": partner, "cross_speaker": cross}

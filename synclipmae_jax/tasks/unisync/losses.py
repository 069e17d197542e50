"""UniSync's objective (../shared/papers/unisync_summary.txt: "a margin-based contrastive loss and
cross-speaker negatives"; Figure 3's samples).

Each video window (the anchor) has one synchronised audio window (the positive, p_pos) and N
negatives (p_neg): per Figure 3 the same speaker's audio shifted with temporal overlap (|shift| < K
frames) or without (|shift| >= K), and another speaker's audio at the same time. With p_sync in
[0, 1] (`models.unisync.sync_probability`):

  L = BCE(p_pos, 1) + mean_n BCE(p_neg_n, 0) + mean_n max(0, margin - (p_pos - p_neg_n))

the binary cross-entropy on p_sync with which SyncNet's successors train their sync experts, plus
the margin term: every negative must score at least `margin` below its own anchor's positive. The
summary names the margin component, not its form; this one is our reading, averaged over anchors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_EPS = 1e-7  # keeps log() finite at p_sync = 0 or 1


def unisync_loss(p_pos: jax.Array, p_neg: jax.Array, margin: float) -> tuple[jax.Array, dict]:
  """The loss of anchors with positives p_pos [B] and negatives p_neg [B, N] (all in [0, 1]).

  Returns:
    (scalar loss, {"unisync/bce_pos", "unisync/bce_neg", "unisync/margin", "unisync/separated"}:
    the three terms and the fraction of (anchor, negative) pairs already `margin` apart).
  """
  if p_neg.ndim != 2 or p_neg.shape[0] != p_pos.shape[0]:
    raise ValueError(f"p_neg {p_neg.shape} must be [B, N] for p_pos {p_pos.shape}")
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  bce_pos = -jnp.mean(jnp.log(jnp.clip(p_pos, _EPS, 1.0)))
  bce_neg = -jnp.mean(jnp.log(jnp.clip(1.0 - p_neg, _EPS, 1.0)))
  gap = p_pos[:, None] - p_neg
  hinge = jnp.mean(jax.nn.relu(margin - gap))
  metrics = {"unisync/bce_pos": bce_pos, "unisync/bce_neg": bce_neg, "unisync/margin": hinge,
             "unisync/separated": jnp.mean((gap >= margin).astype(jnp.float32))}
  return bce_pos + bce_neg + hinge, metrics

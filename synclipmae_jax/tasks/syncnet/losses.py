"""SyncNet's objective (Chung and Zisserman 2016, section 3.2): the contrastive loss of Hadsell et
al. on the Euclidean distance d between an audio and a video embedding,

  E = 1 / (2N) sum_n  y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2,

y_n = 1 for a synchronised pair, 0 for a false one. Our pairs are UniSync's samples
(`tasks/pair_sync/pairs.py`: one positive and three negatives per video window, the same speaker's
audio shifted with and without overlap, and another speaker's), as SyncNet's false pairs are shifted
audio of the same clip; the two classes are weighted equally (the mean over positives and the mean
over negatives, halved), so the 1:3 ratio of the samples does not tilt the loss. The paper does not
print its margin; ours is `model.syncnet.margin`.

The loss has a stationary point where every embedding of a stream is one constant vector, the two
at distance margin / 2; a model whose streams can shrink their output's spread faster than they
learn the pairing falls into it (models/syncnet.py says which choices did).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def contrastive_loss(d_pos: jax.Array, d_neg: jax.Array, margin: float) -> tuple[jax.Array, dict]:
  """The loss of positives' distances d_pos [B] and negatives' d_neg [B, N].

  Returns:
    (scalar loss, {"syncnet/pos": the positives' term, "syncnet/neg": the negatives' term,
    "syncnet/d_pos", "syncnet/d_neg": mean distances, "syncnet/separated": the fraction of
    (anchor, negative) pairs farther than the anchor's positive}).
  """
  if d_neg.ndim != 2 or d_neg.shape[0] != d_pos.shape[0]:
    raise ValueError(f"d_neg {d_neg.shape} must be [B, N] for d_pos {d_pos.shape}")
  if margin <= 0:
    raise ValueError(f"margin must be > 0, got {margin}")
  pos = jnp.mean(jnp.square(d_pos))
  neg = jnp.mean(jnp.square(jax.nn.relu(margin - d_neg)))
  metrics = {"syncnet/pos": pos, "syncnet/neg": neg, "syncnet/d_pos": jnp.mean(d_pos),
             "syncnet/d_neg": jnp.mean(d_neg),
             "syncnet/separated": jnp.mean((d_neg > d_pos[:, None]).astype(jnp.float32))}
  return 0.5 * (pos + neg), metrics

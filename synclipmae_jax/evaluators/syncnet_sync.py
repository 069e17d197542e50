"""The sync evaluation of a SyncNet we trained (tasks/syncnet/): the sync protocol of
`evaluators/sync.py` (the same held-out clips, trials, lag sweep for K in `windows`, R-precision)
on SyncNet's per-window embeddings (centred windows, as for UniSync: `unisync_sync`), with
SyncNet's Euclidean distance, plus the LSE figures of the public SyncNet code:

  sync/lse_d  the minimum over lags of the whole-clip mean distance, averaged over trials;
  sync/lse_c  the median minus that minimum, averaged over trials.

The arithmetic is `syncnet_python`'s (synclipmae_torch/syncnet.py's `lse_from_embeddings`); the
windows are not quite: its 5-frame windows start at every frame and its audio embeddings are
zero-padded beyond the clip, ours are centred on each frame with real frames as lag context
(`sync_metrics.lag_distance_matrix`). The figures rank models of this protocol; they are not
comparable with LSE figures of the public weights on other videos. Options: the sync evaluator's.
"""

from __future__ import annotations

import numpy as np

from synclipmae_jax.evaluators import sync, unisync_sync

validate = sync.validate


class Evaluator(unisync_sync.Evaluator):
  """`unisync_sync.Evaluator` with unrectified embeddings, Euclidean distances and LSE-D / LSE-C."""

  RECTIFY = False
  DISTANCE = "euclidean"

  def metrics(self, tokens: dict) -> tuple[dict[str, float], list[dict]]:
    metrics, trials = super().metrics(tokens)
    metrics["sync/lse_d"] = float(np.mean([min(t["distance"]) for t in trials]))
    metrics["sync/lse_c"] = float(np.mean([t["confidence"] for t in trials]))  # median - min
    return metrics, trials

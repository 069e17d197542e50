"""How far apart the sync metrics of two token sets that differ by rounding (two back ends, two
device counts) may be: what tests comparing such evaluations allow.

Each sync metric counts decisions (sync_metrics): a window's lag is the argmin of its
distance-vs-lag curve, a query's R-precision rank counts the distractors no farther than its true
partner. Computed from tokens that differ by rounding, a decision can change only if it is a near
tie: another candidate within twice the largest difference between the two sets' distances. A
metric may move by what its near ties weigh in it, and by nothing where there are none (the usual
case: distances differ by ~1e-6, the curves' gaps are ~1e-2).
"""

from __future__ import annotations

import numpy as np

from synclipmae_jax import checkpointing, input_pipeline, sharding, sync_metrics
from synclipmae_jax.evaluators import sync as sync_evaluator


def allowed_differences(tokens_a: dict, tokens_b: dict, entry, distance: str) -> dict[str, float]:
  """{metric: the largest difference near ties allow} for the `sync/` metrics of two token sets
  (`evaluators.sync.Evaluator.tokens`) of one evaluation `entry` (its windows, max_lag, ks)."""
  s = entry.max_lag
  allowed = {f"sync/{name}_k{k}": 0.0 for k in entry.windows for name in ("acc", "offset")}
  trials = list(zip(tokens_a["audio"], tokens_a["video"], tokens_b["audio"], tokens_b["video"]))
  for audio_a, video_a, audio_b, video_b in trials:
    dist_a = sync_metrics.lag_distance_matrix(audio_a, video_a, s, distance)
    dist_b = sync_metrics.lag_distance_matrix(audio_b, video_b, s, distance)
    for k in entry.windows:
      curves_a = sync_metrics.window_curves(dist_a, k, s)  # [lags, windows]
      delta = np.abs(curves_a - sync_metrics.window_curves(dist_b, k, s)).max()
      lowest = np.sort(curves_a, axis=0)
      near_ties = np.mean(lowest[1] - lowest[0] <= 2 * delta)  # share of this trial's windows
      # A changed window moves its trial's accuracy by one window and its offset error by at
      # most the width of the lag range; the metrics are means over trials.
      allowed[f"sync/acc_k{k}"] += 100.0 * near_ties / len(trials)
      allowed[f"sync/offset_k{k}"] += 2 * s * near_ties / len(trials)
  pairs_a = sync_metrics.pair_distances(np.concatenate(tokens_a["aligned_audio"]),
                                        np.concatenate(tokens_a["aligned_video"]), distance)
  pairs_b = sync_metrics.pair_distances(np.concatenate(tokens_b["aligned_audio"]),
                                        np.concatenate(tokens_b["aligned_video"]), distance)
  delta = np.abs(pairs_a - pairs_b).max()
  true = np.diag(pairs_a)[:, None]
  others = ~np.eye(len(pairs_a), dtype=bool)
  # A query whose rank can change: some candidate (in its pool or not) as near as its partner.
  near_ties = np.mean(np.any((np.abs(pairs_a - true) <= 2 * delta) & others, axis=1))
  allowed.update({f"sync/rprec@{k}": 100.0 * near_ties for k in entry.ks})
  return allowed


def logged_against_one_device(workdir: str) -> dict[str, float]:
  """`allowed_differences` between the sync metrics a run logged (its evaluator on its training
  mesh) and a re-evaluation of the same checkpoint on one device (`synclipmae-sync-eval`'s):
  the tokens of both, computed here."""
  config = checkpointing.read_config(workdir)
  entry = sync_evaluator.entry_of(config)
  evaluator = sync_evaluator.evaluator_of_run(config, entry, input_pipeline.dataset_paths(config)[1])
  one = checkpointing.load(workdir)
  mesh = sharding.make_mesh(config.mesh)
  trained = checkpointing.load(workdir, mesh=mesh)
  with sharding.scope(mesh, sharding.rules(config)):
    tokens = evaluator.tokens(trained.params, trained.frozen)
  return allowed_differences(evaluator.tokens(one.params, one.frozen), tokens, entry,
                             evaluator.DISTANCE)

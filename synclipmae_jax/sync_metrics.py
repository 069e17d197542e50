"""Audio-visual stream synchronisation metrics (paper section 5; VocaLiST protocol).

Two training-free evaluations on per-frame tokens (audio tokens vs vocal-motion tokens):

- Temporal lag detection: slide the video against the audio over lags -max_lag..max_lag
  (the video carries max_lag frames of context on each side, so every lag is scored on
  every frame and no window is biased by the clip's edges), average the distance over windows of K audio frames (the context length K of
  VocaLiST), take the lag of minimum distance per window, and report Acc (fraction of
  windows within +-tolerance frames of the truth, per video, averaged over videos, as
  VocaLiST counts it) and Offset (mean absolute lag error in frames, same averaging).
- R-precision@k: rank the true video token of each audio token among a pool of
  distractors and report the fraction ranked in the top k.

Distances: the cosine distance 1 - cos(a, v) by default (SyncLipMAE's tokens, UniSync's
embeddings), or the Euclidean distance |a - v| that SyncNet's LSE figures are computed with
(`DISTANCES`; a SyncNet-style run's evaluator chooses it).

Sign convention: a lag L > 0 means the video lags the audio, i.e. audio frame t matches
video frame t + L: the audio leads. SyncNet's printed offset has the same sign (offset > 0: the
audio leads the video; synclipmae_torch/syncnet.py, checked against its public code in
tests/test_syncnet.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EPS = 1e-12
DISTANCES = ("cosine", "euclidean")


def _check_distance(distance: str) -> None:
  if distance not in DISTANCES:
    raise ValueError(f"distance={distance!r} must be one of {DISTANCES}")


def pair_distances(audio: np.ndarray, video: np.ndarray, distance: str = "cosine") -> np.ndarray:
  """[N, M] float64 distances between every audio row [N, D] and video row [M, D]: 1 - cosine
  (zero rows have cosine 0) or Euclidean."""
  _check_distance(distance)
  if distance == "cosine":
    return 1.0 - _unit(audio) @ _unit(video).T
  a, v = np.asarray(audio, np.float64), np.asarray(video, np.float64)
  squared = (a * a).sum(-1)[:, None] + (v * v).sum(-1)[None, :] - 2.0 * a @ v.T
  return np.sqrt(np.maximum(squared, 0.0))


def _unit(x: np.ndarray) -> np.ndarray:
  """Rows of `x` (float64) scaled to unit L2 norm (zero rows stay zero)."""
  x = np.asarray(x, dtype=np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def lag_distance_matrix(audio: np.ndarray, video: np.ndarray, max_lag: int = 15,
                        distance: str = "cosine") -> np.ndarray:
  """Distances (`pair_distances`) between audio frame t and video frame t + lag for every lag.

  The video carries `max_lag` frames of context on each side of the audio (as SyncNet's
  padded features do, but with real frames), so every lag is scored on every audio frame.

  Args:
    audio: [T, D] per-frame audio tokens.
    video: [T + 2 * max_lag, D] vocal-motion tokens; row j is the frame that lag
      j - t - max_lag pairs with audio frame t (row max_lag + t is audio frame t's
      lag-0 partner).
    max_lag: lags -max_lag..max_lag are scored.
    distance: one of DISTANCES.

  Returns:
    [2 * max_lag + 1, T] float64; row l holds lag l - max_lag, entry (l, t) is the distance
    between audio[t] and video[max_lag + t + lag] (1 - cos, or |a - v|).

  Raises:
    ValueError: on a negative max_lag or mismatched shapes.
  """
  if max_lag < 0:
    raise ValueError(f"max_lag must be >= 0, got {max_lag}")
  audio, video = np.asarray(audio), np.asarray(video)
  if audio.ndim != 2 or video.ndim != 2 or video.shape != (audio.shape[0] + 2 * max_lag, audio.shape[1]):
    raise ValueError(f"audio {audio.shape} must be [T, D] and video {video.shape} "
                     f"[T + 2 * max_lag = T + {2 * max_lag}, D]")
  t = audio.shape[0]
  pairs = pair_distances(audio, video, distance)  # [T audio, T + 2 max_lag video]
  lags = np.arange(-max_lag, max_lag + 1)
  video_index = np.arange(t)[None, :] + max_lag + lags[:, None]
  return pairs[np.arange(t)[None, :], video_index]


def window_lag_estimates(dist: np.ndarray, window: int, max_lag: int) -> np.ndarray:
  """Lag estimate of every window of `window` consecutive audio frames.

  Windows start at every frame (stride 1) with all K frames in [0, T): T - K + 1 windows.
  For each window and lag the distance is the mean over the window's frames; the estimate
  is the lag of minimum mean distance (the most negative lag on exact ties).

  Args:
    dist: [2 * max_lag + 1, T] from `lag_distance_matrix`.
    window: the context length K >= 1.
    max_lag: the max_lag `dist` was built with.

  Returns:
    [T - K + 1] int lag estimates, in frames.

  Raises:
    ValueError: if `dist` does not have 2 * max_lag + 1 rows or K is not in [1, T].
  """
  return np.argmin(window_curves(dist, window, max_lag), axis=0) - max_lag


def window_curves(dist: np.ndarray, window: int, max_lag: int) -> np.ndarray:
  """[2 * max_lag + 1, T - K + 1]: each window's distance-vs-lag curve, the mean over its K
  frames (windows as `window_lag_estimates`; same arguments and errors)."""
  dist = np.asarray(dist, dtype=np.float64)
  if dist.ndim != 2 or dist.shape[0] != 2 * max_lag + 1:
    raise ValueError(f"dist shape {dist.shape} must be [2 * max_lag + 1 = {2 * max_lag + 1}, T]")
  if not 1 <= window <= dist.shape[1]:
    raise ValueError(f"window must be in [1, T = {dist.shape[1]}], got {window}")
  return np.lib.stride_tricks.sliding_window_view(dist, window, axis=1).mean(axis=-1)


def window_confidences(dist: np.ndarray, window: int, max_lag: int) -> np.ndarray:
  """[T - K + 1]: each window's confidence, median minus minimum of its distance-vs-lag curve
  (`window_curves`): the per-window Sync-C of paper 5 (video dubbing, Table 4) and of SyncNet."""
  curves = window_curves(dist, window, max_lag)
  return np.median(curves, axis=0) - curves.min(axis=0)


def lag_curve(audio: np.ndarray, video: np.ndarray, max_lag: int = 15,
              distance: str = "cosine") -> dict:
  """One clip's whole-clip lag estimate: the distance-vs-lag curve and its minimum.

  Args:
    audio, video, max_lag, distance: as for `lag_distance_matrix`.

  Returns:
    {"lags": [2 * max_lag + 1] ints -max_lag..max_lag, "distance": the distance of each
     lag averaged over all frames, "estimate": the lag of minimum distance (frames; the most
     negative on exact ties), "confidence": median minus minimum of the curve (SyncNet's LSE-C
     arithmetic on our distances: 0 when no lag stands out)}.
  """
  return curve_estimate(lag_distance_matrix(audio, video, max_lag, distance).mean(axis=1), max_lag)


def curve_estimate(curve: np.ndarray, max_lag: int) -> dict:
  """{"lags", "distance", "estimate", "confidence"} of a distance-vs-lag curve over
  -max_lag..max_lag (see `lag_curve`)."""
  curve = np.asarray(curve, np.float64)
  best = int(np.argmin(curve))
  return {"lags": list(range(-max_lag, max_lag + 1)), "distance": curve.tolist(),
          "estimate": best - max_lag, "confidence": float(np.median(curve) - curve[best])}


def lag_detection(
    audio_clips: Sequence[np.ndarray],
    video_clips: Sequence[np.ndarray],
    true_lags: Sequence[int],
    *,
    windows: Sequence[int] = (1, 5, 15),
    max_lag: int = 15,
    tolerance: int = 1,
    distance: str = "cosine",
) -> dict[int, dict[str, float | list[float]]]:
  """Temporal lag detection Acc / Offset for each context length K (paper section 5).

  Args:
    audio_clips: per-video [T_i, D] audio tokens.
    video_clips: per-video [T_i + 2 * max_lag, D] vocal-motion tokens (see
      `lag_distance_matrix` for the context frames).
    true_lags: per-video ground-truth lag (L > 0: video lags audio), |L| <= max_lag.
    windows: context lengths K.
    max_lag: lags -max_lag..max_lag are searched.
    tolerance: a window is correct when |estimate - truth| <= tolerance frames.
    distance: one of DISTANCES.

  Returns:
    {K: {"acc": mean over videos of the per-video fraction of correct windows,
         "offset": mean over videos of the per-video mean |estimate - truth| (frames),
         "acc_per_video": [...], "offset_per_video": [...]}}.

  Raises:
    ValueError: on empty or mismatched inputs, a true lag beyond max_lag, a negative
      tolerance, or a clip shorter than a window.
  """
  if not audio_clips or not len(audio_clips) == len(video_clips) == len(true_lags):
    raise ValueError(
        f"need equally many (>= 1) audio clips ({len(audio_clips)}), video clips "
        f"({len(video_clips)}) and true lags ({len(true_lags)})")
  if tolerance < 0:
    raise ValueError(f"tolerance must be >= 0, got {tolerance}")
  for i, lag in enumerate(true_lags):
    if abs(lag) > max_lag:
      raise ValueError(f"true_lags[{i}] = {lag} lies outside [-{max_lag}, {max_lag}]")
  per_video: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in windows}
  for i, (audio, video, lag) in enumerate(zip(audio_clips, video_clips, true_lags)):
    dist = lag_distance_matrix(audio, video, max_lag, distance)
    for k in windows:
      if k > dist.shape[1]:
        raise ValueError(f"clip {i} has {dist.shape[1]} frames, fewer than window K = {k}")
      error = np.abs(window_lag_estimates(dist, k, max_lag) - lag)
      per_video[k][0].append(float(np.mean(error <= tolerance)))
      per_video[k][1].append(float(np.mean(error)))
  return {
      k: {
          "acc": float(np.mean(accs)),
          "offset": float(np.mean(offsets)),
          "acc_per_video": accs,
          "offset_per_video": offsets,
      } for k, (accs, offsets) in per_video.items()
  }


def r_precision(
    audio: np.ndarray,
    video: np.ndarray,
    *,
    pool_size: int = 32,
    ks: Sequence[int] = (1, 2, 3),
    seed: int = 0,
    distance: str = "cosine",
) -> dict[int, float]:
  """Audio-to-video token matching R-precision@k (paper section 5).

  For each query i the pool is its true video token i plus pool_size - 1 distinct other
  indices drawn with `np.random.default_rng(seed)`. The pool is ranked by its distance
  (`pair_distances`) to audio i; ties count against the query: rank = 1 + number of distractors whose
  distance is <= the true one's. R@k = mean over queries of [rank <= k].

  Args:
    audio: [N, D] audio tokens.
    video: [N, D] video tokens, row i paired with audio row i.
    pool_size: candidates per query, including the true one (1 <= pool_size <= N).
    ks: the k values to report.
    seed: seed of the distractor sampler.
    distance: one of DISTANCES.

  Returns:
    {k: R-precision@k} as fractions in [0, 1].

  Raises:
    ValueError: on mismatched shapes, N < pool_size, or k outside [1, pool_size].
  """
  audio, video = np.asarray(audio), np.asarray(video)
  if audio.ndim != 2 or audio.shape != video.shape:
    raise ValueError(f"audio {audio.shape} and video {video.shape} must both be [N, D]")
  n = audio.shape[0]
  if not 1 <= pool_size <= n:
    raise ValueError(f"pool_size must be in [1, N = {n}], got {pool_size}")
  for k in ks:
    if not 1 <= k <= pool_size:
      raise ValueError(f"k = {k} must lie in [1, pool_size = {pool_size}]")
  _check_distance(distance)
  rng = np.random.default_rng(seed)
  ranks = np.empty(n, dtype=np.int64)
  for i in range(n):
    others = rng.choice(n - 1, size=pool_size - 1, replace=False)
    others = others + (others >= i)  # skip the true index i
    pool_dist = pair_distances(audio[i:i + 1], video[np.concatenate([[i], others])], distance)[0]
    ranks[i] = 1 + np.count_nonzero(pool_dist[1:] <= pool_dist[0])
  return {k: float(np.mean(ranks <= k)) for k in ks}


def chance(*, max_lag: int, max_true_lag: int, tolerance: int, pool_size: int,
           ks: Sequence[int]) -> dict[str, float]:
  """The figures of an estimator that guesses: Acc and Offset when every window's estimate is
  uniform over -max_lag..max_lag and the true lag uniform over -max_true_lag..max_true_lag (as the
  sync evaluator draws it); R-precision@k when the true token's rank is uniform over the pool.

  Returns:
    {"acc": fraction, "offset": frames, "rprec@k": fraction for each k} (independent of K).
  """
  guesses = np.arange(-max_lag, max_lag + 1)
  truths = np.arange(-max_true_lag, max_true_lag + 1)
  error = np.abs(guesses[None, :] - truths[:, None])
  out = {"acc": float(np.mean(error <= tolerance)), "offset": float(np.mean(error))}
  out.update({f"rprec@{k}": k / pool_size for k in ks})
  return out

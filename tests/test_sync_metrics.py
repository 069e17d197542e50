"""Tests of the lag-detection and R-precision synchronisation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from synclipmae_jax import sync_metrics

T, D, MAX_LAG = 60, 16, 15


def _lagged_pair(rng, lag, t=T, d=D, noise=0.01, max_lag=MAX_LAG):
  """Audio [t] and video [t + 2 max_lag] (context rows) with video frame t + lag = audio t."""
  audio = rng.normal(size=(t, d))
  video = rng.normal(size=(t + 2 * max_lag, d))
  video[max_lag + lag + np.arange(t)] = audio + noise * rng.normal(size=(t, d))
  return audio, video


def test_lag_distance_matrix_entries():
  rng = np.random.default_rng(0)
  audio, video = rng.normal(size=(7, 4)), rng.normal(size=(13, 4))
  dist = sync_metrics.lag_distance_matrix(audio, video, max_lag=3)
  assert dist.shape == (7, 7)
  for row, lag in enumerate(range(-3, 4)):
    for t in range(7):
      a, v = audio[t], video[3 + t + lag]
      want = 1.0 - a @ v / (np.linalg.norm(a) * np.linalg.norm(v))
      np.testing.assert_allclose(dist[row, t], want, rtol=1e-12)
  with pytest.raises(ValueError, match="max_lag"):
    sync_metrics.lag_distance_matrix(audio, video[:7], max_lag=3)


def test_sign_convention_positive_lag_means_video_lags_audio():
  # The video shows at frame t + 3 what the audio carries at frame t: the video is late.
  rng = np.random.default_rng(1)
  frames = rng.normal(size=(80, D))  # what the audio "says" at each absolute frame
  audio = frames[20:60]  # audio frames 20..59
  video = np.concatenate([rng.normal(size=(3, D)), frames])[20 - MAX_LAG:60 + MAX_LAG]
  result = sync_metrics.lag_detection([audio], [video], [3], windows=(5,))
  assert result[5]["acc"] == 1.0 and result[5]["offset"] == 0.0
  estimates = sync_metrics.window_lag_estimates(sync_metrics.lag_distance_matrix(audio, video), 5, 15)
  assert np.all(estimates == 3)


def test_window_count():
  rng = np.random.default_rng(2)
  audio, video = rng.normal(size=(T, D)), rng.normal(size=(T + 2 * MAX_LAG, D))
  dist = sync_metrics.lag_distance_matrix(audio, video, MAX_LAG)
  for k in (1, 5, 15, T):
    estimates = sync_metrics.window_lag_estimates(dist, k, MAX_LAG)
    assert estimates.shape == (T - k + 1,)
    assert np.all(np.abs(estimates) <= MAX_LAG)
  with pytest.raises(ValueError, match="window"):
    sync_metrics.window_lag_estimates(dist, T + 1, MAX_LAG)


def test_window_estimate_is_mean_argmin():
  dist = np.array([
      [0.30, 0.90, 0.10, 0.90],  # lag -1
      [0.50, 0.50, 0.50, 0.50],  # lag 0
      [0.20, 0.20, 0.80, 0.60],  # lag +1
  ])
  np.testing.assert_array_equal(sync_metrics.window_lag_estimates(dist, 1, 1), [1, 1, -1, 0])
  # Windows 1 and 2: lag -1 ties lag 0 (and lag +1 in window 1); the most negative wins.
  np.testing.assert_array_equal(sync_metrics.window_lag_estimates(dist, 2, 1), [1, -1, -1])


def test_window_confidence_is_median_minus_min_of_the_window_curve():
  dist = np.array([
      [0.30, 0.90, 0.10, 0.90],  # lag -1
      [0.50, 0.50, 0.50, 0.50],  # lag 0
      [0.20, 0.20, 0.80, 0.60],  # lag +1
  ])
  # One frame per window: the curves are the columns.
  np.testing.assert_allclose(sync_metrics.window_confidences(dist, 1, 1),
                             [0.30 - 0.20, 0.50 - 0.20, 0.50 - 0.10, 0.60 - 0.50])
  # Two frames: curves (0.6, 0.5, 0.2), (0.5, 0.5, 0.5), (0.5, 0.5, 0.7).
  np.testing.assert_allclose(sync_metrics.window_confidences(dist, 2, 1), [0.3, 0.0, 0.0], atol=1e-12)
  with pytest.raises(ValueError, match="window"):
    sync_metrics.window_confidences(dist, 5, 1)


@pytest.mark.parametrize("lag", [-15, -10, -3, 0, 4, 12, 15])
def test_lag_detection_recovers_true_lag(lag):
  rng = np.random.default_rng(100 + lag)
  pairs = [_lagged_pair(rng, lag) for _ in range(3)]
  result = sync_metrics.lag_detection(
      [p[0] for p in pairs], [p[1] for p in pairs], [lag] * 3, windows=(1, 5, 15))
  for k in (1, 5, 15):
    assert result[k]["acc"] == 1.0 and result[k]["offset"] == 0.0


def test_tolerance_counts_near_misses():
  rng = np.random.default_rng(7)
  audio, video = _lagged_pair(rng, 2)
  off_by_one = sync_metrics.lag_detection([audio], [video], [3], windows=(5,), tolerance=1)
  exact = sync_metrics.lag_detection([audio], [video], [3], windows=(5,), tolerance=0)
  assert off_by_one[5]["acc"] == 1.0 and exact[5]["acc"] == 0.0
  assert off_by_one[5]["offset"] == 1.0


def test_pure_noise_gives_chance_accuracy():
  rng = np.random.default_rng(3)
  n_videos = 40
  audio = [rng.normal(size=(T, D)) for _ in range(n_videos)]
  video = [rng.normal(size=(T + 2 * MAX_LAG, D)) for _ in range(n_videos)]
  result = sync_metrics.lag_detection(audio, video, [0] * n_videos, windows=(1, 5, 15))
  chance = 3 / (2 * MAX_LAG + 1)  # lags -1, 0, 1 of 31 are within tolerance
  for k in (1, 5, 15):
    assert abs(result[k]["acc"] - chance) < 0.06, (k, result[k]["acc"], chance)
    assert result[k]["offset"] > 5.0


def test_lag_detection_rejects_bad_input():
  rng = np.random.default_rng(4)
  audio, video = _lagged_pair(rng, 0, t=10)
  with pytest.raises(ValueError, match="true_lags"):
    sync_metrics.lag_detection([audio], [video], [16])
  with pytest.raises(ValueError, match="fewer than window"):
    sync_metrics.lag_detection([audio], [video], [0], windows=(15,))
  with pytest.raises(ValueError, match="equally many"):
    sync_metrics.lag_detection([audio], [video, video], [0])
  with pytest.raises(ValueError, match="must be"):
    sync_metrics.lag_distance_matrix(audio, video[:-1])


def test_r_precision_identical_is_perfect():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(64, D))
  assert sync_metrics.r_precision(x, 2.0 * x) == {1: 1.0, 2: 1.0, 3: 1.0}


def test_r_precision_random_is_chance():
  rng = np.random.default_rng(6)
  n = 3000
  result = sync_metrics.r_precision(rng.normal(size=(n, D)), rng.normal(size=(n, D)), seed=1)
  for k in (1, 2, 3):
    assert abs(result[k] - k / 32) < 0.015, result


def test_r_precision_ties_count_against_query():
  # pool_size = N = 4: every other index is a distractor, so no sampling randomness.
  audio = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  video = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  # Ranks: q0 true d=0, tie with v1 -> 2; q1 -> 2; q2 true d=0, others d=1 -> 1;
  # q3 true d=1, ties with v0 and v1, v2 closer -> 4.
  got = sync_metrics.r_precision(audio, video, pool_size=4, ks=(1, 2, 3, 4))
  assert got == {1: 0.25, 2: 0.75, 3: 0.75, 4: 1.0}


def test_r_precision_pool_excludes_true_index_and_is_seeded():
  rng = np.random.default_rng(7)
  audio, video = rng.normal(size=(40, D)), rng.normal(size=(40, D))
  first = sync_metrics.r_precision(audio, video, pool_size=8, seed=3)
  assert first == sync_metrics.r_precision(audio, video, pool_size=8, seed=3)
  # If the true index could also be drawn as a distractor it would tie with itself and
  # push every query to rank >= 2; with pool = everything, identical inputs stay perfect.
  assert sync_metrics.r_precision(audio, audio, pool_size=40, ks=(1,)) == {1: 1.0}


def test_r_precision_rejects_small_n():
  x = np.zeros((10, 4))
  with pytest.raises(ValueError, match="pool_size"):
    sync_metrics.r_precision(x, x)
  with pytest.raises(ValueError, match="k = 5"):
    sync_metrics.r_precision(x, x, pool_size=4, ks=(5,))

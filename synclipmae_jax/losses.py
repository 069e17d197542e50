"""Pretraining objectives of SyncLipMAE (paper section 3.3).

Three terms, all pure `jax.numpy` with static shapes so they can be jitted and vmapped:

- `reconstruction_mse`: the pixel-space reconstruction loss of the video-driven and
  audio-driven decoding passes ("Pixel-Space Reconstruction (MSE)").
- `multi_positive_infonce` (with `contrastive_positives`): the symmetric CLIP-style
  "Audio-Vocal Contrastive Alignment" with a positive set per anchor (aligned frame,
  temporal neighbours within delta, and frames whose frozen audio features are similar),
  within one contrastive group of clips; `batch_infonce` is the same loss over the whole
  global batch, each batch shard's anchors against every shard's candidates.
- `cross_covariance_penalty`: the "Cross-Covariance Decorrelation" between the
  factor-specific prompt tokens (identity, vocal motion, ambient motion).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NORM_PIX_EPS = 1e-6
L2_EPS = 1e-12
# On the variance in `cross_correlation`: tiny, so that shrinking a token (to any scale float32
# holds in practice, std >= 1e-5) does not lower the decorrelation penalty.
VAR_EPS = 1e-12


def _l2_normalize(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """Scales `x` to unit L2 norm along `axis` (zero vectors stay zero)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), L2_EPS))


def reconstruction_mse(
    pred: jnp.ndarray,
    target: jnp.ndarray,
    weight: jnp.ndarray,
    *,
    norm_pix: bool,
) -> jnp.ndarray:
  """Per-frame pixel reconstruction loss L_rec of one decoding pass (paper 3.3).

  Args:
    pred: [..., N, P] predicted pixels of the N patches (P values per patch).
    target: [..., N, P] true patch pixels, same shape as `pred`.
    weight: [..., N] patch weights; 1 = the patch is counted (e.g. the masked patches of
      bypass 1), 0 = ignored. All ones scores every patch.
    norm_pix: normalise each target patch to zero mean and unit variance first,
      (t - mean) / sqrt(var + 1e-6), as MAE's `norm_pix_loss` (which uses the unbiased
      variance over the P values of the patch; P must then be >= 2).

  Returns:
    Scalar sum_n(w_n * mean_p (pred - target)^2) / max(sum_n w_n, 1).

  Raises:
    ValueError: on mismatched shapes, or P < 2 with `norm_pix`.
  """
  if pred.shape != target.shape:
    raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
  if pred.ndim < 2 or weight.shape != pred.shape[:-1]:
    raise ValueError(
        f"weight shape {weight.shape} must equal pred.shape[:-1] = {pred.shape[:-1]}")
  if norm_pix:
    if target.shape[-1] < 2:
      raise ValueError(f"norm_pix needs >= 2 values per patch, got P = {target.shape[-1]}")
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + NORM_PIX_EPS)
  per_patch = jnp.mean(jnp.square(pred - target), axis=-1)
  weight = weight.astype(per_patch.dtype)
  return jnp.sum(weight * per_patch) / jnp.maximum(jnp.sum(weight), 1.0)


def contrastive_positives(
    clip_index: jnp.ndarray,
    frame_index: jnp.ndarray,
    audio_features: jnp.ndarray,
    *,
    neighbor_delta: int,
    similarity_threshold: float | None,
) -> jnp.ndarray:
  """Positive set P_i of the multi-positive InfoNCE for M candidates (paper 3.3).

  Candidate j is a positive of anchor i when it is the aligned index or a temporal
  neighbour (same clip and |t_i - t_j| <= delta), or when the audio self-similarity
  exceeds the threshold: cosine similarity of the frozen audio features, centred over the
  M candidates (and under stop-gradient), > `similarity_threshold`. The diagonal is always
  positive, so every anchor has at least one positive. The relation is symmetric.

  Args:
    clip_index: [M] int, the clip of each candidate.
    frame_index: [M] int, the frame (time step) of each candidate within its clip.
    audio_features: [M, F] frozen audio features (e.g. the pooled speech-encoder states).
    neighbor_delta: temporal neighbourhood delta >= 0 (0 = only the aligned frame).
    similarity_threshold: cosine threshold in [-1, 1], or None to disable the expansion.

  Returns:
    bool [M, M], entry (i, j) True when j is a positive of anchor i.

  Raises:
    ValueError: on a negative delta or mismatched shapes.
  """
  if neighbor_delta < 0:
    raise ValueError(f"neighbor_delta must be >= 0, got {neighbor_delta}")
  m = clip_index.shape[0]
  if clip_index.shape != (m,) or frame_index.shape != (m,):
    raise ValueError(
        f"clip_index {clip_index.shape} and frame_index {frame_index.shape} must both be [M]")
  if audio_features.ndim != 2 or audio_features.shape[0] != m:
    raise ValueError(f"audio_features shape {audio_features.shape} must be [M={m}, F]")
  positives = _aligned_or_near(clip_index, frame_index, clip_index, frame_index,
                               neighbor_delta) | jnp.eye(m, dtype=bool)
  if similarity_threshold is not None:
    feats = _centred_unit(audio_features, jnp.mean(_frozen(audio_features), axis=0))
    positives = positives | (feats @ feats.T > similarity_threshold)
  return positives


def _aligned_or_near(anchor_clip, anchor_frame, candidate_clip, candidate_frame, delta: int):
  """bool [n, M]: candidate j of anchor i's clip within `delta` frames (the positive rule
  before the audio-similarity expansion)."""
  same_clip = anchor_clip[:, None] == candidate_clip[None, :]
  return same_clip & (jnp.abs(anchor_frame[:, None] - candidate_frame[None, :]) <= delta)


def _frozen(audio_features: jnp.ndarray) -> jnp.ndarray:
  return jax.lax.stop_gradient(audio_features).astype(jnp.float32)


def _centred_unit(audio_features: jnp.ndarray, mean: jnp.ndarray) -> jnp.ndarray:
  """The frozen features [n, F] centred by the candidates' `mean` [F], at unit L2 norm (the
  rows whose dot products the similarity expansion thresholds)."""
  return _l2_normalize(_frozen(audio_features) - mean[None, :])


def _directional(logits: jnp.ndarray, positives: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per anchor (row) of logits [n, M] and its positive set [n, M]: the multi-positive
  -log sum_{j in P_i} p_i(j), and whether the highest logit is a positive (float 0 / 1)."""
  nll = jax.nn.logsumexp(logits, axis=1) - jax.nn.logsumexp(logits, axis=1, where=positives)
  top1 = jnp.take_along_axis(positives, jnp.argmax(logits, axis=1)[:, None], axis=1)[:, 0]
  return nll, top1.astype(jnp.float32)


def multi_positive_infonce(
    audio_tokens: jnp.ndarray,
    vocal_tokens: jnp.ndarray,
    audio_features: jnp.ndarray,
    *,
    temperature: float | jnp.ndarray,
    neighbor_delta: int,
    similarity_threshold: float | None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Symmetric multi-positive InfoNCE L_con between audio and vocal-motion tokens (3.3).

  One contrastive group of G clips with T frames each: the M = G * T audio tokens a_i and
  vocal-motion tokens v_j are L2-normalised and scored with logits_ij = a_i . v_j / tau.
  With p_i(j) the softmax over the vocal candidates for audio anchor i and P_i its positive
  set (`contrastive_positives`),

    L_a2v(i) = -log sum_{j in P_i} p_i(j),

  L_v2a is the same on logits^T with P^T, and L_con = (mean_i L_a2v + mean_i L_v2a) / 2.

  Memory: the logits are (G*T) x (G*T) per group, so a global batch of B clips split into
  B / G groups (the caller vmaps this function over groups) costs B * G * T^2 logits, not
  (B * T)^2 as one batch-wide softmax would (`batch_infonce`: 2 (B * T)^2, each device holding
  its anchors' rows).

  Args:
    audio_tokens: [G, T, D] adapter outputs (one audio token per video frame).
    vocal_tokens: [G, T, D] vocal-motion prompt tokens.
    audio_features: [G, T, F] frozen audio features defining the similarity expansion of
      the positive set (no gradient flows into them).
    temperature: tau > 0 (a Python float, or a traced scalar such as a learned one).
    neighbor_delta: same-clip temporal neighbours |t_i - t_j| <= delta are positives.
    similarity_threshold: audio self-similarity threshold, or None.

  Returns:
    (loss, metrics): the scalar L_con and a dict with `contrastive_top1` (fraction of
    anchors whose highest logit is a positive, both directions averaged) and
    `num_positives` (mean |P_i|).

  Raises:
    ValueError: on mismatched shapes or a non-positive Python temperature.
  """
  _check_infonce_inputs(audio_tokens, vocal_tokens, audio_features, temperature)
  g, t, d = audio_tokens.shape
  m = g * t
  a = _l2_normalize(audio_tokens.reshape(m, d).astype(jnp.float32))
  v = _l2_normalize(vocal_tokens.reshape(m, d).astype(jnp.float32))
  positives = contrastive_positives(
      jnp.repeat(jnp.arange(g), t),
      jnp.tile(jnp.arange(t), g),
      audio_features.reshape(m, -1),
      neighbor_delta=neighbor_delta,
      similarity_threshold=similarity_threshold)
  logits = (a @ v.T) / temperature
  nll_a2v, top1_a2v = _directional(logits, positives)
  nll_v2a, top1_v2a = _directional(logits.T, positives.T)
  metrics = {
      "contrastive_top1": 0.5 * (jnp.mean(top1_a2v) + jnp.mean(top1_v2a)),
      "num_positives": jnp.mean(jnp.sum(positives, axis=1).astype(jnp.float32)),
  }
  return 0.5 * (jnp.mean(nll_a2v) + jnp.mean(nll_v2a)), metrics


def _check_infonce_inputs(audio_tokens, vocal_tokens, audio_features, temperature) -> None:
  if audio_tokens.ndim != 3 or audio_tokens.shape != vocal_tokens.shape:
    raise ValueError(
        f"audio_tokens {audio_tokens.shape} and vocal_tokens {vocal_tokens.shape} "
        "must both be [G, T, D]")
  if audio_features.ndim != 3 or audio_features.shape[:2] != audio_tokens.shape[:2]:
    raise ValueError(
        f"audio_features shape {audio_features.shape} must be [G, T, F] with "
        f"[G, T] = {audio_tokens.shape[:2]}")
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")


def batch_infonce(
    audio_tokens: jnp.ndarray,
    vocal_tokens: jnp.ndarray,
    audio_features: jnp.ndarray,
    *,
    axis_name,
    temperature: float | jnp.ndarray,
    neighbor_delta: int,
    similarity_threshold: float | None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """`multi_positive_infonce` over the whole global batch ("CLIP-style", paper 3.3).

  Runs on one batch shard (inside `jax.shard_map` over the mesh's batch axes `axis_name`; None
  = not sharded, the arguments are the whole batch). The shard holds S of the B clips; its
  S * T audio anchors are scored against the vocal tokens of all B * T frames, gathered from
  every shard, and its S * T vocal anchors against all audio tokens: the logits are two
  [S * T, B * T] blocks per shard (the rows of the global square that the shard's anchors own,
  and the rows of its transpose), never the (B * T)^2 square on one device. Positives are
  `contrastive_positives` of the global batch (same clip within delta, or frozen audio
  features, centred over all B * T frames, with cosine above the threshold): the features are
  gathered without gradient and only the shard's [S * T, B * T] rows of the relation are
  formed; the relation is symmetric, so the same rows serve both directions.

  The loss is the mean over all 2 * B * T anchors (summed over shards with `psum`), i.e. the
  loss of one device holding the whole batch. Its gradient is that loss's: the transpose of the
  all-gather is a reduce-scatter, so a shard's tokens receive the gradient of every shard's
  logits in which they are candidates.

  Args:
    audio_tokens, vocal_tokens: [S, T, D] this shard's clips (the adapter's audio tokens, the
      vocal-motion prompt tokens).
    audio_features: [S, T, F] their frozen audio features (the similarity expansion).
    axis_name: the mesh axis name (or tuple of names) the batch is split over, or None.
    temperature, neighbor_delta, similarity_threshold: as `multi_positive_infonce`.

  Returns:
    (loss, metrics) as `multi_positive_infonce`, over the global batch (the same on every
    shard).

  Raises:
    ValueError: on mismatched shapes, a negative delta or a non-positive Python temperature.
  """
  _check_infonce_inputs(audio_tokens, vocal_tokens, audio_features, temperature)
  if neighbor_delta < 0:
    raise ValueError(f"neighbor_delta must be >= 0, got {neighbor_delta}")
  s, t, d = audio_tokens.shape
  m = s * t

  def gather(x):  # [m, ...] of every shard, in shard order
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)

  def total(x):  # summed over the global batch
    return jnp.sum(x) if axis_name is None else jax.lax.psum(jnp.sum(x), axis_name)

  shard = 0 if axis_name is None else jax.lax.axis_index(axis_name)
  a = _l2_normalize(audio_tokens.reshape(m, d).astype(jnp.float32))
  v = _l2_normalize(vocal_tokens.reshape(m, d).astype(jnp.float32))
  a_all, v_all = gather(a), gather(v)  # [N, D], N = B * T, in shard order
  n = a_all.shape[0]
  clips, frames = jnp.arange(n) // t, jnp.arange(n) % t
  mine = shard * m + jnp.arange(m)  # the shard's anchors' global indices
  positives = _aligned_or_near(clips[mine], frames[mine], clips, frames, neighbor_delta)
  if similarity_threshold is not None:
    features = audio_features.reshape(m, -1)
    features_all = gather(jax.lax.stop_gradient(features))  # in the features' own dtype
    mean = jnp.mean(_frozen(features_all), axis=0)
    similar = _centred_unit(features, mean) @ _centred_unit(features_all, mean).T
    positives = positives | (similar > similarity_threshold)
  nll_a2v, top1_a2v = _directional((a @ v_all.T) / temperature, positives)
  nll_v2a, top1_v2a = _directional((v @ a_all.T) / temperature, positives)
  metrics = {
      "contrastive_top1": (total(top1_a2v) + total(top1_v2a)) / (2 * n),
      "num_positives": total(jnp.sum(positives, axis=1).astype(jnp.float32)) / n,
  }
  return (total(nll_a2v) + total(nll_v2a)) / (2 * n), metrics


def cross_correlation(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Pearson cross-correlation matrix [D_a, D_b] of token sets a [N, D_a] and b [N, D_b].

  Each set is centred over N and divided by its per-dimension standard deviation,
  Z = (x - mean) / sqrt(var + 1e-12); C = Z_a^T Z_b / N. Under `jax.jit` with the N rows sharded
  over devices, the means and the product reduce over the whole batch: XLA computes partial
  [D_a, D_b] sums on each device and adds them (one all-reduce of D_a x D_b values).
  """
  n = a.shape[0]
  z = []
  for x in (a, b):
    x = x.astype(jnp.float32)
    x = x - jnp.mean(x, axis=0, keepdims=True)
    z.append(x * jax.lax.rsqrt(jnp.mean(x * x, axis=0, keepdims=True) + VAR_EPS))
  return z[0].T @ z[1] / n


def cross_covariance_penalty(tokens: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Cross-covariance decorrelation L_dec between factor tokens (paper 3.3).

  For every pair a < b of token sets (identity, vocal-motion and ambient-motion prompts of the
  N frames of the global batch), with C_ab = `cross_correlation`(x_a, x_b),

    L_dec = mean over pairs of sum(C_ab ** 2) / sqrt(D_a D_b),

  the sum of squared entries normalised by the width, as VICReg and Barlow Twins count their
  off-diagonal terms. Leakage costs O(1): one token an orthogonal map of the other (b = a, a
  permutation, a rotation) gives about 1 (the squared entries of an orthogonal D x D matrix sum
  to D), a single shared dimension 1 / D, one common signal in every dimension D. Independent
  tokens give about D / N (E[C_ij^2] = 1 / (N - 1)): the sample must be large against D for the
  penalty to tell leakage from noise (ratio about 1 + N / D), which is why the objective computes
  it over the frames of the whole global batch, not per device. The penalty is invariant to
  scaling or shifting any token dimension (up to the 1e-12 eps on the variance), so it cannot
  be lowered by shrinking tokens, and its gradient is finite for constant tokens.

  Args:
    tokens: at least two arrays [N, D_k] with the same N >= 2.

  Returns:
    The scalar penalty.

  Raises:
    ValueError: on fewer than two token sets, non-2-D arrays or differing N.
  """
  if len(tokens) < 2:
    raise ValueError(f"need at least two token sets, got {len(tokens)}")
  n = tokens[0].shape[0]
  for k, x in enumerate(tokens):
    if x.ndim != 2 or x.shape[0] != n:
      raise ValueError(f"tokens[{k}] has shape {x.shape}, expected [N={n}, D]")
  if n < 2:
    raise ValueError(f"need N >= 2 rows to centre, got N = {n}")
  penalties = [
      jnp.sum(jnp.square(cross_correlation(tokens[i], tokens[j])))
      / np.sqrt(tokens[i].shape[1] * tokens[j].shape[1])
      for i in range(len(tokens)) for j in range(i + 1, len(tokens))
  ]
  return jnp.mean(jnp.stack(penalties))

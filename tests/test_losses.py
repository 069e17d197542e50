"""Tests of the pretraining objectives against naive loop references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae_jax import losses


def _naive_positives(g, t, feats, delta, threshold):
  """Positive sets by explicit loops over candidate pairs (float64)."""
  m = g * t
  feats = feats.reshape(m, -1).astype(np.float64)
  centred = feats - feats.mean(axis=0)
  pos = np.zeros((m, m), dtype=bool)
  for i in range(m):
    for j in range(m):
      gi, ti = divmod(i, t)
      gj, tj = divmod(j, t)
      if i == j or (gi == gj and abs(ti - tj) <= delta):
        pos[i, j] = True
      elif threshold is not None:
        ci, cj = centred[i], centred[j]
        cos = ci @ cj / (np.linalg.norm(ci) * np.linalg.norm(cj))
        pos[i, j] = cos > threshold
  return pos


def _naive_infonce(audio, vocal, feats, temperature, delta, threshold):
  """Symmetric multi-positive InfoNCE with Python loops (float64)."""
  g, t, d = audio.shape
  m = g * t
  a = audio.reshape(m, d).astype(np.float64)
  v = vocal.reshape(m, d).astype(np.float64)
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  pos = _naive_positives(g, t, feats, delta, threshold)
  logits = [[float(a[i] @ v[j]) / temperature for j in range(m)] for i in range(m)]

  def one_direction(lg, p):
    total = 0.0
    for i in range(m):
      denom = sum(math.exp(x) for x in lg[i])
      num = sum(math.exp(lg[i][j]) for j in range(m) if p[i][j])
      total += -math.log(num / denom)
    return total / m

  logits_t = [[logits[j][i] for j in range(m)] for i in range(m)]
  return 0.5 * (one_direction(logits, pos) + one_direction(logits_t, pos.T)), pos


@pytest.fixture(scope="module")
def contrastive_inputs():
  rng = np.random.default_rng(0)
  g, t, d, f = 3, 5, 8, 6
  audio = rng.normal(size=(g, t, d)).astype(np.float32)
  vocal = (0.5 * audio + rng.normal(size=(g, t, d))).astype(np.float32)
  # Features drawn around 3 prototypes, so some cross-clip pairs are very similar, on a
  # common offset that only the batch centring removes.
  prototypes = rng.normal(size=(3, f))
  feats = (4.0 + prototypes[rng.integers(0, 3, size=(g, t))]
           + 0.1 * rng.normal(size=(g, t, f)))
  return audio, vocal, feats.astype(np.float32)


@pytest.mark.parametrize("delta,threshold", [(0, None), (1, None), (2, None), (1, 0.8)])
def test_infonce_matches_naive_loop(contrastive_inputs, delta, threshold):
  audio, vocal, feats = contrastive_inputs
  temperature = 0.3
  fn = jax.jit(lambda a, v, f: losses.multi_positive_infonce(
      a, v, f, temperature=temperature, neighbor_delta=delta,
      similarity_threshold=threshold))
  loss, metrics = fn(audio, vocal, feats)
  want, pos = _naive_infonce(audio, vocal, feats, temperature, delta, threshold)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["num_positives"]), pos.sum(axis=1).mean(), rtol=1e-6)
  t = audio.shape[1]
  clip = np.repeat(np.arange(audio.shape[0]), t)
  cross_clip = pos & (clip[:, None] != clip[None, :])
  assert cross_clip.any() == (threshold is not None)
  assert not pos.all()
  if delta == 0 and threshold is None:
    assert np.array_equal(pos, np.eye(pos.shape[0], dtype=bool))


def test_positives_match_naive_loop(contrastive_inputs):
  _, _, feats = contrastive_inputs
  g, t, _ = feats.shape
  got = losses.contrastive_positives(
      jnp.repeat(jnp.arange(g), t), jnp.tile(jnp.arange(t), g), feats.reshape(g * t, -1),
      neighbor_delta=1, similarity_threshold=0.8)
  want = _naive_positives(g, t, feats, 1, 0.8)
  np.testing.assert_array_equal(np.asarray(got), want)
  np.testing.assert_array_equal(want, want.T)


@pytest.mark.parametrize("delta,threshold", [(0, None), (1, 0.8)])
def test_batch_infonce_unsharded_matches_naive_loop(contrastive_inputs, delta, threshold):
  """`batch_infonce` without a batch axis (the whole batch on one device) is the group loss with
  the batch as one group (tests/test_global_negatives.py shards it over 8 devices)."""
  audio, vocal, feats = contrastive_inputs
  loss, metrics = jax.jit(lambda a, v, f: losses.batch_infonce(
      a, v, f, axis_name=None, temperature=0.3, neighbor_delta=delta,
      similarity_threshold=threshold))(audio, vocal, feats)
  want, pos = _naive_infonce(audio, vocal, feats, 0.3, delta, threshold)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["num_positives"]), pos.sum(axis=1).mean(), rtol=1e-6)
  _, group_metrics = losses.multi_positive_infonce(
      audio, vocal, feats, temperature=0.3, neighbor_delta=delta, similarity_threshold=threshold)
  np.testing.assert_allclose(float(metrics["contrastive_top1"]),
                             float(group_metrics["contrastive_top1"]), rtol=1e-6)


def test_top1_metric_matches_argmax(contrastive_inputs):
  audio, vocal, feats = contrastive_inputs
  _, metrics = losses.multi_positive_infonce(
      audio, vocal, feats, temperature=0.3, neighbor_delta=1, similarity_threshold=None)
  g, t, d = audio.shape
  a = audio.reshape(-1, d) / np.linalg.norm(audio.reshape(-1, d), axis=1, keepdims=True)
  v = vocal.reshape(-1, d) / np.linalg.norm(vocal.reshape(-1, d), axis=1, keepdims=True)
  sim = a @ v.T
  pos = _naive_positives(g, t, feats, 1, None)
  rows = np.arange(g * t)
  want = 0.5 * (pos[rows, sim.argmax(1)].mean() + pos.T[rows, sim.T.argmax(1)].mean())
  np.testing.assert_allclose(float(metrics["contrastive_top1"]), want, rtol=1e-6)


def test_infonce_gradient_finite_and_stops_at_features(contrastive_inputs):
  audio, vocal, feats = contrastive_inputs

  def loss_fn(a, v, f):
    return losses.multi_positive_infonce(
        a, v, f, temperature=0.1, neighbor_delta=1, similarity_threshold=0.8)[0]

  ga, gv, gf = jax.jit(jax.grad(loss_fn, argnums=(0, 1, 2)))(audio, vocal, feats)
  for grad in (ga, gv):
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
  np.testing.assert_array_equal(np.asarray(gf), 0.0)


def test_aligned_tokens_low_temperature_near_zero_loss():
  rng = np.random.default_rng(1)
  tokens = rng.normal(size=(2, 4, 32)).astype(np.float32)
  feats = rng.normal(size=(2, 4, 6)).astype(np.float32)
  loss, metrics = losses.multi_positive_infonce(
      tokens, 3.0 * tokens, feats, temperature=0.01, neighbor_delta=0,
      similarity_threshold=None)
  assert float(loss) < 1e-4
  assert float(metrics["contrastive_top1"]) == 1.0


def test_infonce_vmaps_over_groups(contrastive_inputs):
  audio, vocal, feats = contrastive_inputs
  stacked = [np.stack([x, x[::-1]]) for x in (audio, vocal, feats)]
  fn = jax.vmap(lambda a, v, f: losses.multi_positive_infonce(
      a, v, f, temperature=0.3, neighbor_delta=1, similarity_threshold=None)[0])
  got = fn(*stacked)
  for k in range(2):
    want = _naive_infonce(*(x[k] for x in stacked), 0.3, 1, None)[0]
    np.testing.assert_allclose(float(got[k]), want, rtol=1e-5)


def test_infonce_rejects_bad_input(contrastive_inputs):
  audio, vocal, feats = contrastive_inputs
  with pytest.raises(ValueError, match="temperature"):
    losses.multi_positive_infonce(
        audio, vocal, feats, temperature=0.0, neighbor_delta=0, similarity_threshold=None)
  with pytest.raises(ValueError, match="vocal_tokens"):
    losses.multi_positive_infonce(
        audio, vocal[:, :-1], feats, temperature=0.1, neighbor_delta=0,
        similarity_threshold=None)
  with pytest.raises(ValueError, match="neighbor_delta"):
    losses.multi_positive_infonce(
        audio, vocal, feats, temperature=0.1, neighbor_delta=-1, similarity_threshold=None)
  with pytest.raises(ValueError, match="audio_features"):
    losses.batch_infonce(audio, vocal, feats[:, :-1], axis_name=None, temperature=0.1,
                         neighbor_delta=0, similarity_threshold=None)
  with pytest.raises(ValueError, match="neighbor_delta"):
    losses.batch_infonce(audio, vocal, feats, axis_name=None, temperature=0.1,
                         neighbor_delta=-1, similarity_threshold=None)


def _naive_mse(pred, target, weight, norm_pix):
  total, count = 0.0, 0.0
  for idx in np.ndindex(*weight.shape):
    t = target[idx].astype(np.float64)
    if norm_pix:
      t = (t - t.mean()) / math.sqrt(t.var(ddof=1) + 1e-6)
    total += weight[idx] * np.mean((pred[idx] - t) ** 2)
    count += weight[idx]
  return total / max(count, 1.0)


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("weight_kind", ["masked", "all", "none"])
def test_reconstruction_mse_matches_naive_loop(norm_pix, weight_kind):
  rng = np.random.default_rng(2)
  pred = rng.normal(size=(2, 3, 6, 12)).astype(np.float32)
  target = (3.0 * rng.normal(size=(2, 3, 6, 12)) + 1.5).astype(np.float32)
  weight = {
      "masked": (rng.uniform(size=(2, 3, 6)) < 0.6).astype(np.float32),
      "all": np.ones((2, 3, 6), np.float32),
      "none": np.zeros((2, 3, 6), np.float32),
  }[weight_kind]
  got = jax.jit(losses.reconstruction_mse, static_argnames="norm_pix")(
      pred, target, weight, norm_pix=norm_pix)
  np.testing.assert_allclose(float(got), _naive_mse(pred, target, weight, norm_pix), rtol=1e-5)
  if weight_kind == "none":
    assert float(got) == 0.0


def test_reconstruction_mse_rejects_bad_shapes():
  x = np.zeros((4, 8), np.float32)
  with pytest.raises(ValueError, match="weight shape"):
    losses.reconstruction_mse(x, x, np.ones(3), norm_pix=False)
  with pytest.raises(ValueError, match="target shape"):
    losses.reconstruction_mse(x, x[:, :4], np.ones(4), norm_pix=False)


@pytest.fixture(scope="module")
def decorrelation_tokens():
  rng = np.random.default_rng(3)
  n, d = 4000, 8
  return rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, d))


def test_decorrelation_independent_tokens_near_zero(decorrelation_tokens):
  a, b, c = decorrelation_tokens
  value = float(losses.cross_covariance_penalty([a, b, c]))
  # D^2 squared correlations of about 1 / (N - 1) each, over D.
  np.testing.assert_allclose(value, a.shape[1] / (a.shape[0] - 1), rtol=0.2)


def test_decorrelation_grows_with_correlation(decorrelation_tokens):
  a, noise, _ = decorrelation_tokens
  values = [
      float(losses.cross_covariance_penalty([a, rho * a + math.sqrt(1 - rho**2) * noise]))
      for rho in (0.0, 0.3, 0.6, 0.9)
  ]
  assert all(x < y for x, y in zip(values, values[1:])), values
  # b = a (identity map) costs about 1; one shared signal in every dimension costs D.
  np.testing.assert_allclose(float(losses.cross_covariance_penalty([a, a])), 1.0, rtol=0.05)
  shared = np.repeat(a[:, :1], a.shape[1], axis=1)
  np.testing.assert_allclose(float(losses.cross_covariance_penalty([shared, -shared])),
                             a.shape[1], rtol=1e-4)


def test_decorrelation_scale_invariant(decorrelation_tokens):
  a, noise, c = decorrelation_tokens
  b = 0.6 * a + 0.8 * noise
  base = float(losses.cross_covariance_penalty([a, b, c]))
  scaled = float(losses.cross_covariance_penalty([10.0 * a, 0.1 * b, 5.0 * c + 2.0]))
  np.testing.assert_allclose(scaled, base, rtol=1e-3)


PRETRAIN_WIDTH = 1024  # the Sapiens-0.3B prompt tokens of configs/pretrain.py
PRETRAIN_FRAMES = 6144 * 8  # the frames of its global batch, over which the objective computes it


@pytest.fixture(scope="module")
def pretrain_size_tokens():
  """Vocal and ambient tokens of the pretrain config's global batch: independent, and leaking (the
  ambient token an orthogonal map of the vocal one)."""
  rng = np.random.default_rng(4)
  n, d = PRETRAIN_FRAMES, PRETRAIN_WIDTH
  vocal = rng.normal(size=(n, d)).astype(np.float32)
  ambient = rng.normal(size=(n, d)).astype(np.float32)
  rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return vocal, ambient, (vocal @ rotation.astype(np.float32))


def test_decorrelation_leakage_costs_20x_noise_at_pretrain_size(pretrain_size_tokens):
  vocal, ambient, leaked = pretrain_size_tokens
  independent = float(losses.cross_covariance_penalty([vocal, ambient]))
  leaking = float(losses.cross_covariance_penalty([vocal, leaked]))
  assert leaking >= 20 * independent, (leaking, independent)
  np.testing.assert_allclose(leaking, 1.0, rtol=0.05)
  shrunk = float(losses.cross_covariance_penalty([vocal, 1e-3 * leaked]))
  np.testing.assert_allclose(shrunk, leaking, rtol=1e-3)  # shrinking a token does not lower it


def test_decorrelation_sharded_equals_whole_batch(pretrain_size_tokens):
  """On 8 devices with the frames sharded, the penalty is the single-device penalty of the whole
  batch, and XLA reduces D x D partial sums (no gather of the tokens)."""
  vocal, _, leaked = pretrain_size_tokens
  vocal, leaked = vocal[:8192], leaked[:8192]
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  penalty = jax.jit(lambda a, b: losses.cross_covariance_penalty([a, b]))
  compiled = penalty.lower(jax.device_put(vocal, rows), jax.device_put(leaked, rows)).compile()
  sharded = float(compiled(jax.device_put(vocal, rows), jax.device_put(leaked, rows)))
  one = jax.devices()[0]
  whole = float(penalty(jax.device_put(vocal, one), jax.device_put(leaked, one)))
  np.testing.assert_allclose(sharded, whole, rtol=1e-5)
  hlo = compiled.as_text()
  assert "all-reduce" in hlo and "all-gather" not in hlo


def test_decorrelation_gradient_finite_for_constant_tokens():
  constant = jnp.ones((64, 16), jnp.float32)
  grads = jax.grad(lambda a, b: losses.cross_covariance_penalty([a, b]), argnums=(0, 1))(
      constant, 2.0 * constant)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_decorrelation_rejects_bad_input():
  x = np.zeros((5, 3))
  with pytest.raises(ValueError, match="two token sets"):
    losses.cross_covariance_penalty([x])
  with pytest.raises(ValueError, match=r"tokens\[1\]"):
    losses.cross_covariance_penalty([x, np.zeros((4, 3))])

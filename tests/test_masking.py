"""Two-bypass masking: exactly k patches kept, the face-preserving bypass favours the face."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae_jax import face_regions, masking, photometric

GRID = 6
WEIGHTS = dict(background=1.0, face=2.0, lower_face=4.0, mouth=16.0)


@pytest.fixture(scope="module")
def boxes():
  f = 512
  face = jnp.tile(jnp.array([[0.25, 0.2, 0.75, 0.9]]), (f, 1))
  mouth = jnp.tile(jnp.array([[0.4, 0.7, 0.6, 0.8]]), (f, 1))
  return face, mouth


def test_patchify_roundtrip():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 48, 48, 3))
  p = masking.patchify(x, 8)
  assert p.shape == (3, 36, 192)
  np.testing.assert_array_equal(p[0, 7], x[0, 8:16, 8:16].reshape(-1))
  np.testing.assert_array_equal(masking.unpatchify(p, 8, 6), x)


@pytest.mark.parametrize("ratio,expected", [(0.75, 9), (0.9, 4), (0.5, 18), (0.99, 1)])
def test_num_visible(ratio, expected):
  assert masking.num_visible(36, ratio) == expected


def test_both_bypasses_keep_exactly_k_distinct_patches(boxes):
  face, mouth = boxes
  k = 9
  w = masking.face_weights(face, mouth, GRID, **WEIGHTS)
  for keep in (masking.uniform_keep(jax.random.PRNGKey(1), 512, 36, k),
               masking.weighted_keep(jax.random.PRNGKey(2), w, k)):
    keep = np.asarray(keep)
    assert keep.shape == (512, k)
    assert all(len(set(row)) == k for row in keep)
    assert keep.min() >= 0 and keep.max() < 36
    mask = np.asarray(masking.keep_to_mask(jnp.asarray(keep), 36))
    assert (mask.sum(1) == k).all()


def test_face_weights_follow_boxes(boxes):
  face, mouth = boxes
  w = np.asarray(masking.face_weights(face[:1], mouth[:1], GRID, **WEIGHTS))[0].reshape(GRID, GRID)
  assert w[0, 0] == pytest.approx(1.0)  # background corner
  # patch row 4 (y in [0.667, 0.833]) x col 2/3 (x in [0.333, 0.667]) holds the mouth
  assert w[4, 2:4].min() > w[2, 2:4].max() > w[0, 0]
  assert w.max() <= 16.0 + 1e-6


def test_face_bypass_favours_the_face_and_mouth(boxes):
  face, mouth = boxes
  k = 9
  w = masking.face_weights(face, mouth, GRID, **WEIGHTS)
  mouth_cover = np.asarray(face_regions.box_coverage(np.asarray(mouth), GRID))[0] > 0
  face_cover = np.asarray(face_regions.box_coverage(np.asarray(face), GRID))[0] > 0
  weighted = np.asarray(masking.keep_to_mask(masking.weighted_keep(jax.random.PRNGKey(3), w, k), 36))
  uniform = np.asarray(masking.keep_to_mask(masking.uniform_keep(jax.random.PRNGKey(4), 512, 36, k), 36))
  # uniform: every patch kept with probability k/N; weighted: mouth patches far more often
  np.testing.assert_allclose(uniform.mean(0), k / 36, atol=0.08)
  assert weighted[:, mouth_cover].mean() > 2.5 * uniform[:, mouth_cover].mean()
  assert weighted[:, face_cover].mean() > 1.2 * uniform[:, face_cover].mean()
  assert weighted[:, ~face_cover].mean() < 0.75 * uniform[:, ~face_cover].mean()


def test_face_view_from_numpy_weights_equals_the_jax_view():
  """The PyTorch bridge computes the evaluation view's weights in numpy and ranks them with a
  stable sort: it must keep the patches the jitted JAX view keeps (weights agree to rounding:
  XLA fuses multiply-adds; cells inside a box have coverage exactly 1 on both sides)."""
  rng = np.random.default_rng(0)
  lo = rng.uniform(0.0, 0.5, (256, 2)).astype(np.float32)
  face = np.concatenate([lo, lo + rng.uniform(0.2, 0.5, (256, 2)).astype(np.float32)], axis=1)
  mouth = np.concatenate([face[:, :2] + 0.1, face[:, :2] + 0.2], axis=1).astype(np.float32)
  for grid in (2, 6, 7, 14):
    ours = face_regions.face_weights(face, mouth, grid, **WEIGHTS)
    assert ours.dtype == np.float32
    view = jax.jit(lambda f, m: masking.top_weight_keep(masking.face_weights(f, m, grid, **WEIGHTS),
                                                        masking.num_visible(grid * grid, 0.75)))
    k = masking.num_visible(grid * grid, 0.75)
    np.testing.assert_allclose(
        ours, np.asarray(jax.jit(masking.face_weights, static_argnums=2)(face, mouth, grid, **WEIGHTS)),
        rtol=1e-6)
    np.testing.assert_array_equal(
        np.sort(np.argsort(-ours, axis=1, kind="stable")[:, :k], axis=1), np.asarray(view(face, mouth)))
    inside = face_regions.box_coverage(np.float32([[0.0, 0.0, 1.0, 1.0]]), grid)
    np.testing.assert_array_equal(inside, 1.0)


def test_weighted_keep_matches_sampling_without_replacement():
  # k = 1: Gumbel top-1 picks index i with probability w_i / sum(w).
  w = jnp.tile(jnp.array([[1.0, 2.0, 3.0, 4.0]]), (20000, 1))
  keep = np.asarray(masking.weighted_keep(jax.random.PRNGKey(5), w, 1))[:, 0]
  np.testing.assert_allclose(np.bincount(keep, minlength=4) / len(keep), [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_top_weight_keep_is_deterministic_top_k(boxes):
  face, mouth = boxes
  w = masking.face_weights(face[:2], mouth[:2], GRID, **WEIGHTS)
  keep = np.asarray(masking.top_weight_keep(w, 4))
  assert set(keep[0]) == set(np.argsort(-np.asarray(w[0]), kind="stable")[:4])


def test_photometric_jitter_changes_colour_not_geometry():
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))
  y = photometric.jitter(jax.random.PRNGKey(1), x, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
  assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
  assert float(jnp.abs(y - x).mean()) > 0.01
  # frames draw their own factors
  assert not np.allclose(np.asarray(y[0] - x[0]).mean(), np.asarray(y[1] - x[1]).mean())
  z = photometric.jitter(jax.random.PRNGKey(1), x, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
  np.testing.assert_allclose(z, x, atol=1e-5)

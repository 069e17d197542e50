"""Two-bypass masking: exactly k patches kept, the face-preserving bypass favours the face."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import face_weights
from synclipmae_jax import config_defaults, masking, objective, photometric

GRID = 6
WEIGHTS = dict(face_weights.DEFAULT_WEIGHTS)


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
  w = face_weights.patch_weights(face, mouth, GRID, **WEIGHTS, xp=jnp)
  for keep in (masking.uniform_keep(jax.random.PRNGKey(1), 512, 36, k),
               masking.weighted_keep(jax.random.PRNGKey(2), w, k)):
    keep = np.asarray(keep)
    assert keep.shape == (512, k)
    assert all(len(set(row)) == k for row in keep)
    assert keep.min() >= 0 and keep.max() < 36
    mask = np.asarray(masking.keep_to_mask(jnp.asarray(keep), 36))
    assert (mask.sum(1) == k).all()


def test_face_bypass_favours_the_face_and_mouth(boxes):
  face, mouth = boxes
  k = 9
  w = face_weights.patch_weights(face, mouth, GRID, **WEIGHTS, xp=jnp)
  mouth_cover = np.asarray(face_weights.box_coverage(mouth, GRID, xp=jnp))[0] > 0
  face_cover = np.asarray(face_weights.box_coverage(face, GRID, xp=jnp))[0] > 0
  weighted = np.asarray(masking.keep_to_mask(masking.weighted_keep(jax.random.PRNGKey(3), w, k), 36))
  uniform = np.asarray(masking.keep_to_mask(masking.uniform_keep(jax.random.PRNGKey(4), 512, 36, k), 36))
  # uniform: every patch kept with probability k/N; weighted: mouth patches far more often
  np.testing.assert_allclose(uniform.mean(0), k / 36, atol=0.08)
  assert weighted[:, mouth_cover].mean() > 2.5 * uniform[:, mouth_cover].mean()
  assert weighted[:, face_cover].mean() > 1.2 * uniform[:, face_cover].mean()
  assert weighted[:, ~face_cover].mean() < 0.75 * uniform[:, ~face_cover].mean()


def test_weighted_keep_matches_sampling_without_replacement():
  # k = 1: Gumbel top-1 picks index i with probability w_i / sum(w).
  w = jnp.tile(jnp.array([[1.0, 2.0, 3.0, 4.0]]), (20000, 1))
  keep = np.asarray(masking.weighted_keep(jax.random.PRNGKey(5), w, 1))[:, 0]
  np.testing.assert_allclose(np.bincount(keep, minlength=4) / len(keep), [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_top_weight_keep_is_the_top_k_with_ties_to_the_lower_index(boxes):
  """The evaluation view: the k highest weights, equal weights (the face box's columns 1 and 4
  cover 1.5 - 1 = 5 - 4.5 = 0.5 of their cells, exactly) taken in patch order, ascending."""
  face, mouth = boxes
  w = np.asarray(face_weights.patch_weights(face[:2], mouth[:2], GRID, **WEIGHTS, xp=jnp))
  ranked = -np.sort(-w[0])
  for k in (3, 5, 9):
    assert ranked[k - 1] == ranked[k]  # the cut falls among equal weights
    expected = [sorted(sorted(range(w.shape[1]), key=lambda i, r=row: (-r[i], i))[:k]) for row in w]
    np.testing.assert_array_equal(masking.top_weight_keep(jnp.asarray(w), k), expected)


def test_photometric_jitter_changes_colour_not_geometry():
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))
  y = photometric.jitter(jax.random.PRNGKey(1), x, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
  assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
  assert float(jnp.abs(y - x).mean()) > 0.01
  # frames draw their own factors
  assert not np.allclose(np.asarray(y[0] - x[0]).mean(), np.asarray(y[1] - x[1]).mean())
  z = photometric.jitter(jax.random.PRNGKey(1), x, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
  np.testing.assert_allclose(z, x, atol=1e-5)


def test_hue_shift_is_torchvision_adjust_hue():
  """HSV hue shifted by the factor (a fraction of a full turn), checked pixel by pixel against
  Python's colorsys (torchvision's `adjust_hue` semantics): red shifted by 1/3 turn is green."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(3, 5, 7, 3)).astype(np.float32)
  x[0, 0, 0] = (0.5, 0.5, 0.5)  # grey stays grey
  x[1, 0, 0] = (1.0, 0.0, 0.0)
  factor = np.float32([0.25, 1 / 3, -0.45])
  y = np.asarray(photometric.adjust_hue(jnp.asarray(x), jnp.asarray(factor)))
  for f in range(3):
    for i, j in np.ndindex(5, 7):
      h, s, v = colorsys.rgb_to_hsv(*x[f, i, j].astype(np.float64))
      np.testing.assert_allclose(y[f, i, j], colorsys.hsv_to_rgb((h + factor[f]) % 1.0, s, v), atol=2e-5)
  np.testing.assert_allclose(y[1, 0, 0], (0.0, 1.0, 0.0), atol=1e-5)
  np.testing.assert_allclose(y[0, 0, 0], (0.5, 0.5, 0.5), atol=1e-6)
  with pytest.raises(ValueError, match="hue"):
    photometric.jitter(jax.random.PRNGKey(0), jnp.asarray(x), brightness=0, contrast=0, saturation=0, hue=0.6)


@pytest.mark.parametrize("mode,photometric_on", [
    ("two_bypass", True), ("two_bypass", False), ("uniform_only", True), ("face_only", True),
    ("face_only", False)])
def test_views_of_each_masking_mode(mode, photometric_on):
  """Both passes reconstruct the clean frame; the face-preserving bypass is jittered when
  masking.photometric, in two_bypass and as A2's single view alike; A1 and A2 have one view."""
  c = config_defaults.base_config()
  c.model.update(image_size=48, patch_size=8)
  c.masking.update(mode=mode, photometric=photometric_on)
  f, k = 6, masking.num_visible(36, c.masking.mask_ratio)
  frames = jax.random.randint(jax.random.PRNGKey(0), (2, 3, 48, 48, 3), 0, 256).astype(jnp.uint8)
  face = jnp.tile(jnp.array([0.25, 0.2, 0.75, 0.9]), (2, 3, 1))
  mouth = jnp.tile(jnp.array([0.4, 0.7, 0.6, 0.8]), (2, 3, 1))
  targets, (context, context_keep, motion, motion_keep) = objective.make_views(
      jax.random.PRNGKey(1), frames, face, mouth, c)
  clean = objective.images_to_patches(objective.frames_to_unit(frames), 8)
  np.testing.assert_array_equal(targets, clean)
  assert context.shape == clean.shape and context_keep.shape == (f, k)
  face_view = motion if mode == "two_bypass" else context
  face_keep = motion_keep if mode == "two_bypass" else context_keep
  if mode != "uniform_only":  # the face-weighted keep: the mouth's patch (weight 16) in every frame
    w = face_weights.patch_weights(face.reshape(f, 4), mouth.reshape(f, 4), 6, **WEIGHTS, xp=jnp)
    assert bool(jnp.all(jnp.any(face_keep == jnp.argmax(w, axis=-1)[:, None], axis=-1)))
  if mode == "two_bypass":
    np.testing.assert_array_equal(context, clean)
    assert motion.shape == clean.shape and motion_keep.shape == (f, k)
  else:
    assert motion is None and motion_keep is None
  if mode == "uniform_only":
    np.testing.assert_array_equal(context, clean)
  elif photometric_on:
    assert float(jnp.abs(face_view - clean).mean()) > 0.05  # jittered colours
  else:
    np.testing.assert_array_equal(face_view, clean)

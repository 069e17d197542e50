"""data_pipelines.face_weights: the per-patch keep weights of the face-preserving bypass (paper 3.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import face_weights
from tests import cell_boxes

GRID = 6
WEIGHTS = dict(face_weights.DEFAULT_WEIGHTS)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
  """float32 [n, 4] boxes (x0, y0, x1, y1), some reaching past the image's borders."""
  corners = rng.uniform(-0.1, 1.1, (n, 2, 2))
  return np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)


def _naive_weights(face: np.ndarray, mouth: np.ndarray, grid: int, *, background: float,
                   face_weight: float, lower_face: float, mouth_weight: float) -> np.ndarray:
  """One patch at a time, in float64: the mean over the cell of the piecewise-constant weight
  field (background; face inside the face box; lower_face in its lower half; mouth inside
  the mouth box), i.e. the region weights stepped up by each region's covered area."""

  def covered(box, x0, y0, x1, y1) -> float:  # fraction of the cell inside the box
    w = max(0.0, min(float(box[2]), x1) - max(float(box[0]), x0))
    h = max(0.0, min(float(box[3]), y1) - max(float(box[1]), y0))
    return w * h / ((x1 - x0) * (y1 - y0))

  out = np.zeros((len(face), grid * grid))
  for f, (fb, mb) in enumerate(zip(face, mouth)):
    lower = (fb[0], (float(fb[1]) + float(fb[3])) / 2, fb[2], fb[3])
    for r in range(grid):
      for c in range(grid):
        cell = (c / grid, r / grid, (c + 1) / grid, (r + 1) / grid)
        out[f, r * grid + c] = (background + (face_weight - background) * covered(fb, *cell)
                                + (lower_face - face_weight) * covered(lower, *cell)
                                + (mouth_weight - lower_face) * covered(mb, *cell))
  return out


@pytest.mark.parametrize("grid", [1, 2, GRID, 14])
def test_matches_the_naive_per_patch_reference_in_numpy_and_jitted_jax(grid):
  rng = np.random.default_rng(grid)
  face, mouth = _random_boxes(rng, 40), _random_boxes(rng, 40)
  regions = dict(background=0.5, face=1.5, lower_face=3.0, mouth=11.0)
  expected = _naive_weights(face, mouth, grid, background=0.5, face_weight=1.5, lower_face=3.0,
                            mouth_weight=11.0)
  numpy_w = face_weights.patch_weights(face, mouth, grid, **regions)
  jax_w = jax.jit(lambda f, m: face_weights.patch_weights(f, m, grid, **regions, xp=jnp))(face, mouth)
  assert isinstance(numpy_w, np.ndarray) and isinstance(jax_w, jax.Array)
  for w in (numpy_w, np.asarray(jax_w)):
    assert w.dtype == np.float32 and w.shape == (40, grid * grid)
    # float32 rounding: a few ulp on the cell edges and overlaps, scaled by `grid` into a
    # coverage, then by the weight steps (at most `mouth`).
    np.testing.assert_allclose(w, expected, rtol=0, atol=4 * np.finfo(np.float32).eps * grid * 11.0)


def test_box_coverage_of_cells():
  boxes = np.array([[0.0, 0.0, 1.0, 1.0],  # the whole image: every cell covered
                    [0.0, 0.0, 0.5, 0.5],  # the top-left quarter of a 2 x 2 grid
                    [0.25, 0.5, 0.75, 1.0],  # half of each bottom cell
                    [0.3, 0.3, 0.3, 0.6]], np.float32)  # empty
  cov = face_weights.box_coverage(boxes, 2)
  # Exact: the edges scaled to cell units (0.5, 1, 1.5, 2) and their differences are float32.
  np.testing.assert_array_equal(cov, [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(face_weights.box_coverage(jnp.asarray(boxes), 2, xp=jnp)),
                                cov)


@pytest.mark.parametrize("grid", [2, 6, 7, 14])
def test_cells_wholly_inside_or_outside_a_box_are_covered_exactly_in_numpy_and_jax(grid):
  """Against integer cell edges a cell wholly inside a box covers exactly 1 and one outside
  exactly 0 (not (hi - lo) * grid of rounded edges), and every cell's coverage is the same
  float32 in numpy and jitted JAX: the same correctly rounded operations on the same operands."""
  rng = np.random.default_rng(grid)
  boxes = np.concatenate([_random_boxes(rng, 200), *cell_boxes.cell_edge_boxes(rng, 100, grid)])
  scaled = boxes.astype(np.float64) * grid  # exact: a float32 times a small integer
  j = np.arange(grid)

  def inside_outside(a0, a1):  # per axis [n, grid]: cell j wholly inside, wholly outside
    return (a0[:, None] <= j) & (a1[:, None] >= j + 1), (a1[:, None] <= j) | (a0[:, None] >= j + 1)

  in_x, out_x = inside_outside(scaled[:, 0], scaled[:, 2])
  in_y, out_y = inside_outside(scaled[:, 1], scaled[:, 3])
  inside = (in_y[:, :, None] & in_x[:, None, :]).reshape(len(boxes), -1)
  outside = (out_y[:, :, None] | out_x[:, None, :]).reshape(len(boxes), -1)
  assert inside.sum() > 100 and outside.sum() > 100 and (~inside & ~outside).sum() > 100
  numpy_cov = face_weights.box_coverage(boxes, grid)
  jax_cov = np.asarray(jax.jit(lambda b: face_weights.box_coverage(b, grid, xp=jnp))(boxes))
  for cov in (numpy_cov, jax_cov):
    assert cov.dtype == np.float32
    assert (cov[inside] == 1.0).all() and (cov[outside] == 0.0).all()
  np.testing.assert_array_equal(jax_cov, numpy_cov)


@pytest.mark.parametrize("grid", [2, 6, 7, 14])
def test_cell_edge_boxes_weigh_and_rank_alike_in_numpy_and_jax(grid):
  """Boxes on cell edges: equal weights are equal floats in both back ends and the view keeps
  the same patches. Exact for the default weights: the only fractional coverage (the lower
  face's mid-line, 0.5 (y0 + y1) rounded) is multiplied by a step of 2, every other term is a
  step times 0 or 1, so no rounding depends on how a back end fuses the multiply-adds."""
  face, mouth = cell_boxes.cell_edge_boxes(np.random.default_rng(grid), 300, grid)
  numpy_w = face_weights.patch_weights(face, mouth, grid, **WEIGHTS)
  weights = jax.jit(lambda f, m: face_weights.patch_weights(f, m, grid, **WEIGHTS, xp=jnp))
  jax_w = np.asarray(weights(face, mouth))
  np.testing.assert_array_equal(jax_w, numpy_w)
  k = max(1, round(grid * grid / 4))  # masking.num_visible at mask ratio 0.75
  ranked = -np.sort(-numpy_w, axis=1)
  assert (ranked[:, k - 1] == ranked[:, k]).mean() > 0.3  # the cut falls among equal weights
  np.testing.assert_array_equal(
      np.asarray(jax.jit(lambda w: face_weights.top_k(w, k, xp=jnp))(jax_w)),
      face_weights.top_k(numpy_w, k))


def test_top_k_breaks_ties_by_patch_index_in_numpy_and_jax():
  scores = np.random.default_rng(0).integers(0, 4, (300, 36)).astype(np.float32)  # many ties
  for k in (1, 5, 9, 35, 36):
    expected = [sorted(sorted(range(36), key=lambda i, r=row: (-r[i], i))[:k]) for row in scores]
    np.testing.assert_array_equal(face_weights.top_k(scores, k), expected)
    np.testing.assert_array_equal(jax.jit(lambda s, k=k: face_weights.top_k(s, k, xp=jnp))(scores),
                                  expected)
  assert face_weights.top_k(np.float32([[1, 3, 3, 2, 3, 0]]), 2).tolist() == [[1, 2]]


def test_face_weights_follow_boxes():
  face = np.array([[0.25, 0.2, 0.75, 0.9]], np.float32)
  mouth = np.array([[0.4, 0.7, 0.6, 0.8]], np.float32)
  w = face_weights.patch_weights(face, mouth, GRID, **WEIGHTS)[0].reshape(GRID, GRID)
  assert w[0, 0] == pytest.approx(WEIGHTS["background"])  # background corner
  # patch row 4 (y in [0.667, 0.833]) x col 2/3 (x in [0.333, 0.667]) holds the mouth
  assert w[4, 2:4].min() > w[2, 2:4].max() > w[0, 0]
  assert w.max() <= WEIGHTS["mouth"] + 1e-6
  # A patch wholly inside a region (the mouth inside the lower face) weighs that region's weight.
  face = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
  mouth = np.array([[0.0, 5 / 6, 1.0, 1.0]], np.float32)  # the bottom row of patches
  w = face_weights.patch_weights(face, mouth, GRID, **WEIGHTS).reshape(GRID, GRID)
  np.testing.assert_allclose(w[:3], WEIGHTS["face"], rtol=1e-6)
  np.testing.assert_allclose(w[3:5], WEIGHTS["lower_face"], rtol=1e-6)
  np.testing.assert_allclose(w[5], WEIGHTS["mouth"], rtol=1e-6)


def test_default_weights_put_the_mouth_first():
  w = face_weights.DEFAULT_WEIGHTS
  assert list(w) == ["background", "face", "lower_face", "mouth"]
  assert 0 < w["background"] < w["face"] < w["lower_face"] < w["mouth"]
  with pytest.raises(TypeError):
    w["mouth"] = 1.0  # a shared default: read-only

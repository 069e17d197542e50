"""The Fréchet distance of FID / FVD (synclipmae_torch/frechet.py) against `pytorch-fid`'s
`calculate_frechet_distance` on the same features. pytorch-fid (installed without its
dependencies, requirements-bridge-nodeps.txt) cannot be imported here: its package imports
torchvision, which the bridge does not install. The peer
is its function's own source, taken from the installed `pytorch_fid/fid_score.py` and run with
numpy and scipy, the only names it uses."""

import ast
import warnings

import numpy as np
import pytest
from scipy import linalg

import pytorch_fid_source
from synclipmae_torch import frechet


@pytest.fixture(scope="module")
def peer():
  wanted = lambda n: (("fid", n) if isinstance(n, ast.FunctionDef)
                      and n.name == "calculate_frechet_distance" else (None, None))
  return pytorch_fid_source.functions("fid_score.py", wanted, {"np": np, "linalg": linalg})["fid"]


def _sets(n: int, m: int, d: int, seed: int):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  a = rng.normal(size=(n, d)) @ mix
  b = rng.normal(size=(m, d)) @ (mix + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)) + 0.5
  return a, b


@pytest.mark.parametrize("n, m, d", [(200, 150, 16), (40, 30, 64)])  # the second: singular
def test_frechet_distance_equals_pytorch_fid(peer, n, m, d):
  """Full-rank covariances, and covariances of fewer samples than dimensions (singular: the
  eps-on-the-diagonal path) as FID of a short video has."""
  a, b = _sets(n, m, d, seed=n)
  ours = frechet.features_distance(a, b)
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scipy's deprecation of sqrtm(disp=...) in the peer
    theirs = peer(mu1, s1, mu2, s2)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  assert ours > 0


def test_frechet_distance_of_gaussians_by_hand():
  """Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
  np.testing.assert_allclose(frechet.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)),
                             expected, rtol=1e-12)


def test_a_set_against_itself_is_zero_and_bad_inputs_are_refused():
  a, _ = _sets(100, 10, 8, seed=1)
  assert abs(frechet.features_distance(a, a)) < 1e-8 * np.trace(np.cov(a, rowvar=False))
  with pytest.raises(ValueError, match="at least 2"):
    frechet.features_distance(a[:1], a)
  with pytest.raises(ValueError, match="differ in size"):
    frechet.features_distance(a, a[:, :4])

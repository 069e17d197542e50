"""The Fréchet distance between two sets of features, each summarised as a Gaussian (mean and
covariance): FID on Inception features of frames, FVD on I3D features of clips (paper 5, video
dubbing, Table 4; Heusel et al. 2017, Unterthiner et al. 2018).

  d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

computed as `pytorch-fid`'s `calculate_frechet_distance` does (float64, scipy's `sqrtm`, eps
added to both diagonals when the product is singular, a negligible imaginary part dropped), so
that figures agree with that reference (tests/test_frechet.py checks it to 1e-6 relative).
`pytorch-fid` itself is not imported: its package imports torchvision, which is not among the
bridge's requirements (requirements-bridge.txt).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

EPS = 1e-6  # added to both covariances' diagonals when their product is singular (pytorch-fid)
IMAGINARY_TOLERANCE = 1e-3  # largest imaginary part on the diagonal of the root (pytorch-fid)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of features (N, D) in float64; the covariance with N - 1 (np.cov)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"need at least 2 feature vectors (N, D), got shape {features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = EPS) -> float:
  """d^2 between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"the two sets' statistics differ in size: {mu1.shape} / {mu2.shape}, "
                     f"{sigma1.shape} / {sigma2.shape}")
  diff = mu1 - mu2
  with warnings.catch_warnings():  # a singular product is handled below (pytorch-fid: disp=False)
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
      raise ValueError(f"the covariances' product has a square root with imaginary part "
                       f"{np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def features_distance(a: np.ndarray, b: np.ndarray) -> float:
  """The Fréchet distance between two sets of feature vectors (N, D) and (M, D)."""
  return frechet_distance(*statistics(a), *statistics(b))

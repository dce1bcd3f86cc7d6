"""Distances between two sets of samples: FID, KID and the total variation of label histograms.

- Fréchet distance (FID's formula) between Gaussians fitted to two feature sets:
  |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2). The matrix square root is taken
  through symmetric eigen-decompositions (float64, negative round-off eigenvalues clipped), so it stays
  real and stable when a covariance is rank-deficient, as it is with fewer samples than features.
- KID (Bińkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets of equal size drawn from each set. Unbiased: its
  expectation is 0 for two sets from one distribution, so small sets can read slightly below 0.
- Total variation distance between two categorical histograms: half the L1 distance of the frequencies.

FID is biased upward at small sample counts, so only figures measured with the same set sizes compare;
`rodin eval samples` reports the real-against-real floor at the sizes it uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rodin.errors import DataError


def _as_features(x, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise DataError(f"{name}: need a (N, D) feature array with N >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{name}: the features hold NaN or infinity")
    return array


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a, b) -> float:
    """FID's Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    a, b = _as_features(a, "first set"), _as_features(b, "second set")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)
    return max(value, 0.0)


@dataclass(frozen=True)
class KernelDistance:
    mean: float       # unbiased MMD^2, averaged over subsets
    std: float        # spread over subsets
    subset: int       # samples per set in each subset
    subsets: int


def _polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    m = len(x)
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kernel_distance(a, b, *, subset: int = 100, subsets: int = 100, seed: int = 0) -> KernelDistance:
    """KID between feature sets a and b: subsets of min(subset, N, M) samples from each, without
    replacement within a subset."""
    a, b = _as_features(a, "first set"), _as_features(b, "second set")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    m = min(subset, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [_polynomial_mmd(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
              for _ in range(subsets)]
    return KernelDistance(mean=float(np.mean(values)), std=float(np.std(values)), subset=m, subsets=subsets)


def total_variation(a: Sequence[str], b: Sequence[str]) -> float:
    """Half the L1 distance between the label frequencies of a and b (0: same histogram, 1: disjoint)."""
    if not a or not b:
        raise DataError("cannot compare an empty set of labels")
    fa, fb = Counter(a), Counter(b)
    return 0.5 * sum(abs(fa[k] / len(a) - fb[k] / len(b)) for k in set(fa) | set(fb))


__all__ = ["KernelDistance", "frechet_distance", "kernel_distance", "total_variation"]

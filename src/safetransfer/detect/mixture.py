"""A two-component Gaussian mixture (full covariances) fitted by EM in numpy, for the per-label
split of the multi-layer detector.

It fits the same model as scikit-learn's ``GaussianMixture(2, covariance_type="full",
init_params="kmeans")``: each start is a seeded 2-means clustering (k-means++ seeding, Lloyd
iterations), then EM until the mean log-likelihood moves less than ``tol``; ``reg_covar`` is added
to each covariance's diagonal; the start with the highest mean log-likelihood wins. It is written
here because the detector fits one small mixture per label (tens of dimensions, thousands of rows)
and scikit-learn's per-call validation and k-means machinery cost more than the arithmetic
(measured: docs detection page); the fitted mixtures agree with scikit-learn's to the tolerance
(tests/test_detect.py). Random starts come from ``numpy.random.default_rng(seed)``, so a seed gives
the same fit on every machine, though not the same starts as scikit-learn's.

Units: ``x`` as given; log-likelihoods in nats per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

__all__ = ["TwoGaussians", "fit_two_gaussians"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class TwoGaussians:
    """A fitted mixture: ``weights [2]``, ``means [2, D]``, ``covariances [2, D, D]``, the rows'
    posteriors ``posterior [N, 2]`` and the mean log-likelihood."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    posterior: np.ndarray
    log_likelihood: float


def _two_means(x: np.ndarray, rng: np.random.Generator, max_iter: int = 300) -> np.ndarray:
    """Labels ``[N]`` in {0, 1} of a 2-means clustering from a k-means++ seeding (greedy, 2 local trials)."""
    n = len(x)
    first = x[rng.integers(n)]
    d2 = ((x - first) ** 2).sum(1)
    total = d2.sum()
    if total <= 0:
        return np.zeros(n, dtype=np.int64)
    candidates = rng.choice(n, size=2, p=d2 / total)  # greedy k-means++: keep the better of two draws
    best = min(candidates, key=lambda i: np.minimum(d2, ((x - x[i]) ** 2).sum(1)).sum())
    centres = np.stack([first, x[best]])
    tol = 1e-4 * float(x.var(0).mean())  # scikit-learn's: centre shift against the data's variance
    for _ in range(max_iter):
        # nearer centre: |x - c0|^2 < |x - c1|^2  <=>  x . (c1 - c0) < (|c1|^2 - |c0|^2) / 2
        labels = (x @ (centres[1] - centres[0]) > 0.5 * (centres[1] @ centres[1] - centres[0] @ centres[0])).astype(np.int64)
        moved = centres.copy()
        for k in (0, 1):
            if (labels == k).any():
                centres[k] = x[labels == k].mean(0)
        if ((centres - moved) ** 2).sum() <= tol:
            break
    return (x @ (centres[1] - centres[0]) > 0.5 * (centres[1] @ centres[1] - centres[0] @ centres[0])).astype(np.int64)


def _m_step(x: np.ndarray, resp: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nk = resp.sum(0) + 10 * np.finfo(float).eps
    means = (resp.T @ x) / nk[:, None]
    covs = np.empty((2, x.shape[1], x.shape[1]))
    for k in (0, 1):
        diff = x - means[k]
        covs[k] = (resp[:, k, None] * diff).T @ diff / nk[k]
        covs[k].flat[:: x.shape[1] + 1] += reg
    return nk / len(x), means, covs


def _e_step(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean log-likelihood and log-posteriors ``[N, 2]`` (Mahalanobis terms through the precision's
    Cholesky factor, as scikit-learn computes them)."""
    d = x.shape[1]
    log_p = np.empty((len(x), 2))
    eye = np.eye(d)
    for k in (0, 1):
        chol = np.linalg.cholesky(covs[k])
        prec_chol = solve_triangular(chol, eye, lower=True, check_finite=False).T  # L^-T
        z = x @ prec_chol - means[k] @ prec_chol
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        log_p[:, k] = -0.5 * (d * _LOG_2PI + log_det + np.einsum("ij,ij->i", z, z)) + math.log(weights[k])
    norm = np.logaddexp(log_p[:, 0], log_p[:, 1])
    return float(norm.mean()), log_p - norm[:, None]


def _em(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, reg_covar: float, tol: float,
        max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """EM from the given parameters until the mean log-likelihood moves less than ``tol``."""
    lower = -np.inf
    for _ in range(max_iter):
        ll, log_resp = _e_step(x, weights, means, covs)
        weights, means, covs = _m_step(x, np.exp(log_resp), reg_covar)
        converged = abs(ll - lower) < tol
        lower = ll
        if converged:
            break
    return weights, means, covs, lower


def fit_two_gaussians(x: np.ndarray, seed: int = 0, n_init: int = 3, reg_covar: float = 1e-4, tol: float = 1e-3,
                      max_iter: int = 100, fit_rows: int | None = None) -> TwoGaussians:
    """The best of ``n_init`` seeded starts of EM for a two-component full-covariance mixture on
    ``x [N, D]``. With ``fit_rows``, the starts run on a seeded subset of that many rows and the
    best of them is then refined by EM on all rows (the same optimum, reached in a few full passes).
    A start whose 2-means partition repeats an earlier one is skipped (EM would end where it did)."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sample = x
    if fit_rows is not None and len(x) > fit_rows:
        sample = x[np.sort(rng.choice(len(x), fit_rows, replace=False))]
    best: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
    seen: list[np.ndarray] = []
    for _ in range(n_init):
        labels = _two_means(sample, rng)
        if any(np.array_equal(labels, p) or np.array_equal(labels, 1 - p) for p in seen):
            continue
        seen.append(labels)
        resp = np.stack([labels == 0, labels == 1], 1).astype(np.float64)
        fit = _em(sample, *_m_step(sample, resp, reg_covar), reg_covar, tol, max_iter)
        if best is None or fit[3] > best[3]:
            best = fit
    assert best is not None
    weights, means, covs, lower = best
    if sample is not x:
        weights, means, covs, lower = _em(x, weights, means, covs, reg_covar, tol, max_iter)
    _, log_resp = _e_step(x, weights, means, covs)  # posteriors of the kept fit
    return TwoGaussians(weights, means, covs, np.exp(log_resp), lower)

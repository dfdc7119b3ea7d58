"""SCAn (Tang, Wang, Tang & Zhang, USENIX Security 2021, "Demon in the Variant: Statistical
Analysis of DNNs for Robust Backdoor Contamination Detection").

Model: a sample's representation is its class's identity plus a variation shared by all classes,
``r = μ_class + ε``, with ``μ ~ N(0, S_μ)`` and ``ε ~ N(0, S_ε)``. A poisoned class mixes two
identities (its own and the trigger's), so two subgroups explain it much better than one.

1. The global model: ``S_μ`` and ``S_ε`` by the EM of the reference code (``build_global_model``:
   class identities as posterior means, then the two covariances, until they move less than
   ``tol``; at most 100 rounds).
2. The local model, per class: split the class into two subgroups by the EM of the reference
   (``find_split``: means ``u1``, ``u2``; a sample goes to subgroup 1 where
   ``u1ᵀFu1 − u2ᵀFu2 − 2·rᵀF(u1 − u2) < 0``, ``F = S_ε⁺``; from a seeded random start), then the
   test statistic ``J`` (``calc_test``: how much better two identities explain the class than one).
3. The classes' ``J``, divided by the largest, become robust z-scores (``|J − median| / (1.4826·MAD)``,
   the reference's anomaly index); a class above ``threshold`` (e², the reference's) is called
   poisoned.

Where we differ from the reference, and why:

- Threat model without clean data: by default the global model is fitted on the inspected
  training set itself (the reference fits it on a small clean set the defender holds).
  ``clean_features`` / ``clean_labels`` give the reference's setting, and ``scan-data`` passes its
  held-out split when it planted the poison (clean by construction). The fit on the poisoned set
  itself can miss the poison entirely: the poison bends the shared variation enough to hide in it.
- Which samples are flagged: in a class called poisoned, the smaller of its two subgroups (the
  paper untangles the class into the two; backdoor-toolbox's cleanser flags the whole class).
  Nothing is flagged in the other classes.
- The reference's loops over samples are matrix products here (the same sums).

Units: features as given; ``J`` in the model's log-likelihood units; per-class statistic unitless.
"""

from __future__ import annotations

import math

import numpy as np

from safetransfer.detect.base import DetectionResult, as_features, check_positive, timed
from safetransfer.errors import DataError
from safetransfer.json_values import finite_or_none

THRESHOLD = math.exp(2)
"""A class whose anomaly index exceeds this is called poisoned (the reference's e²)."""
TOL = 1e-2
MAX_ROUNDS = 100


def _cov(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.cov`` of the rows of ``x`` (each row repeated ``weights`` times where given)."""
    w = np.ones(len(x)) if weights is None else weights
    mean = (w[:, None] * x).sum(0) / w.sum()
    centred = x - mean
    return (centred * w[:, None]).T @ centred / (w.sum() - 1)


def global_model(x: np.ndarray, labels: np.ndarray, tol: float = TOL) -> tuple[np.ndarray, np.ndarray]:
    """``(S_μ, S_ε)`` of centred features ``x [N, M]`` by the reference's EM."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, inverse, x)
    means = sums / counts[:, None]
    su, se = _cov(means, counts), _cov(x - means[inverse])
    for _ in range(MAX_ROUNDS):
        f = np.linalg.pinv(se)
        suf = su @ f
        # each class's identity: u_k = S_ε (n_k S_μ + S_ε)⁺ S_μ F Σ_{i∈k} x_i
        ident = np.stack([se @ np.linalg.pinv(n * su + se) @ suf @ s for n, s in zip(counts, sums)])
        new_su, new_se = _cov(ident, counts), _cov(x - ident[inverse])
        moved = np.linalg.norm(new_su - su) + np.linalg.norm(new_se - se)
        su, se = new_su, new_se
        if moved <= tol:
            break
    return su, se


def split_class(x: np.ndarray, f: np.ndarray, rng: np.random.Generator, tol: float = TOL
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two subgroups of one class's centred features ``x [n, M]`` (``F = S_ε⁺``): the bool
    membership of subgroup 1 and the two means, by the reference's EM from a random start."""
    n = len(x)
    z = rng.random(n)
    if n == 1:
        return np.zeros(1, dtype=bool), x[0].copy(), x[0].copy()
    if not (z >= 0.5).any():
        z[0] = 1.0
    if not (z < 0.5).any():
        z[0] = 0.0
    last = -np.ones(n)
    u1 = u2 = x.mean(0)
    for _ in range(MAX_ROUNDS):
        if np.linalg.norm(z - last) <= tol or np.linalg.norm((1 - z) - last) <= tol:
            break
        last = z.copy()
        one = z >= 0.5
        if one.all() or not one.any():
            break
        u1, u2 = x[one].mean(0), x[~one].mean(0)
        bias = u1 @ f @ u1 - u2 @ f @ u2
        z = (bias - 2 * (x @ (f @ (u1 - u2))) < 0).astype(np.float64)
    return z >= 0.5, u1, u2


def class_statistic(x: np.ndarray, su: np.ndarray, se: np.ndarray, f: np.ndarray, one: np.ndarray,
                    u1: np.ndarray, u2: np.ndarray) -> float:
    """The reference's ``calc_test``: how much better two identities explain the class than one."""
    n = len(x)
    mu = se @ np.linalg.pinv(n * su + se) @ su @ f @ x.sum(0)
    b1, b2 = mu @ f @ mu - u1 @ f @ u1, mu @ f @ mu - u2 @ f @ u2
    n1 = int(one.sum())
    score = n1 * b1 + (n - n1) * b2
    score -= 2 * (x[one].sum(0) @ f @ (mu - u1) + x[~one].sum(0) @ f @ (mu - u2))
    return float(score / n)


def anomaly_index(values: np.ndarray) -> np.ndarray:
    """The reference's anomaly index of the class statistics: ``|a − median(a)| / (1.4826·MAD)``
    of ``a = J / max(J)``."""
    a = values / np.max(values)
    dev = np.abs(a - np.median(a))
    mad = 1.4826 * np.median(dev)
    return dev / mad if mad > 0 else np.where(dev > 0, np.inf, 0.0)


def scan_untangling(
    features, labels, threshold: float = THRESHOLD, clean_features=None, clean_labels=None, seed: int = 0,
) -> DetectionResult:
    """SCAn's verdicts (see the module doc): ``features [N, D]`` and ``labels [N]`` of the training
    set; ``clean_features``/``clean_labels``: a clean set to fit the global model on (default: the
    training set itself). Scores: the class's anomaly index for the samples of its smaller
    subgroup, 0 for the larger (so a ranking puts the most anomalous classes' minorities first); the
    per-class info holds each class's ``J``, its anomaly index and whether it is called poisoned."""
    check_positive("threshold", threshold)
    f_all, y = as_features(features, labels)
    classes = np.unique(y)
    if len(classes) < 3:
        raise DataError(f"SCAn compares the classes with each other: it needs at least 3 (got {len(classes)}).")
    timing: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    with timed(timing):
        mean = f_all.mean(0)
        x = f_all - mean
        if clean_features is not None:
            fc, yc = as_features(clean_features, clean_labels)
            su, se = global_model(fc - fc.mean(0), yc)
        else:
            su, se = global_model(x, y)
        f = np.linalg.pinv(se)
        stats, splits = [], []
        for c in classes:
            idx = np.flatnonzero(y == c)
            one, u1, u2 = split_class(x[idx], f, rng)
            stats.append(class_statistic(x[idx], su, se, f, one, u1, u2))
            splits.append((idx, one))
        index = anomaly_index(np.array(stats))
        scores = np.zeros(len(y))
        is_clean = np.ones(len(y), dtype=bool)
        info = {}
        for c, j, ai, (idx, one) in zip(classes, stats, index, splits):
            poisoned = bool(ai > threshold)
            minority = one if one.sum() <= (~one).sum() else ~one
            scores[idx[minority]] = ai  # the ranking: the minority subgroups of the most anomalous classes first
            if poisoned:
                is_clean[idx[minority]] = False
            info[int(c)] = {"samples": int(idx.size), "flagged": int(minority.sum()) if poisoned else 0,
                            "statistic": j, "anomaly_index": finite_or_none(float(ai)), "poisoned": poisoned}
    return DetectionResult("scan_untangling", scores, is_clean, timing["seconds"],
                           {"threshold": threshold, "seed": seed, "global_model": "clean set" if clean_features
                            is not None else "training set"}, info)

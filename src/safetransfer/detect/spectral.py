"""Spectral signatures (Tran, Li & Madry, NeurIPS 2018, "Spectral Signatures in Backdoor Attacks").

For each label, centre the features of its samples, take the top right singular vector ``v``
of the centred matrix and score every sample by its squared projection ``((f − μ)·v)²``:
poisoned samples share a direction the clean ones do not, so they score far above. We
project the *centred* features as the paper does (several popular implementations project
the uncentred ones, which mostly measures the distance from the origin).

Removal rules (per label):

- ``"fixed"`` (the paper's): remove the ``1.5·eps`` highest-scoring share of each label, ``eps``
  being an upper bound on the poisoned share. It flags that many samples in *every* label,
  so its false-positive rate is at least about ``1.5·eps`` on clean labels.
- ``"robust"`` (default): flag the samples whose projection lies more than ``k`` robust
  standard deviations (``k``·1.4826·MAD) from the label's median projection; a clean label's
  projections are about normal and have no such outliers, so nothing is removed from it
  (the squared scores are heavy-tailed, so the test is on the projection itself). ``k = 3``:
  on Fashion-MNIST with 1% BadNets poison (small-CNN features) it flags 68% of the poison at
  1% false positives (k = 2: 93% at 4.9%); the top singular direction there mixes the poison
  with the label's own spread, so activation clustering separates it better.

Units: features as given (any scale); scores in squared feature units.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from safetransfer.detect.base import (
    DetectionResult,
    check_positive,
    per_class_detection,
    robust_z,
)
from safetransfer.errors import ConfigError


def spectral_projection(features: np.ndarray) -> np.ndarray:
    """Projections of one label's centred features on their top right singular vector ``[n]``."""
    centred = features - features.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[0]


def spectral_scores(features: np.ndarray) -> np.ndarray:
    """Tran et al.'s outlier scores: the squared projections ``[n]``."""
    return spectral_projection(features) ** 2


def spectral_signature(
    features, labels, removal: Literal["robust", "fixed"] = "robust", k: float = 3.0, eps: float = 0.1,
) -> DetectionResult:
    """Spectral-signature scores and verdicts (see the module doc); ``features`` ``[N, D]``, ``labels`` ``[N]``."""
    if removal not in ("robust", "fixed"):
        raise ConfigError(f"removal must be 'robust' or 'fixed' (got '{removal}').")
    check_positive("k", k)
    check_positive("eps", eps, 0.5)

    def score_class(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        proj = spectral_projection(f)
        if removal == "fixed":
            s = proj ** 2
            flag = np.zeros(f.shape[0], dtype=bool)
            flag[np.argsort(-s, kind="stable")[: int(np.ceil(1.5 * eps * f.shape[0]))]] = True
            return s / (np.median(s) or 1.0), flag, {}
        z = np.abs(robust_z(proj))  # the projection is about normal for a clean label
        return z, z > k, {}

    return per_class_detection(features, labels, score_class, f"spectral[{removal}]",
                               {"removal": removal, "k": k, "eps": eps})

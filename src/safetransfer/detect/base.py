"""What every poisoned-sample detector returns, and how it is scored against a known poison mask.

Threat model (data poisoning, Gu et al. 2017 "BadNets"; Tran et al. 2018; Chen et al. 2018):
someone who controls part of a training set stamps a trigger on a few samples and relabels
them. The defender holds the (possibly poisoned) training set and, for some detectors, a
model trained on it; they want per-sample suspicion scores and a clean/poisoned verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from safetransfer.errors import ConfigError, DataError


@dataclass
class DetectionResult:
    """Per-sample ``scores`` (higher = more suspicious, float64 ``[N]``) and ``is_clean`` (bool ``[N]``)."""

    method: str
    scores: np.ndarray
    is_clean: np.ndarray
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    per_class: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the samples judged poisoned, the most suspicious first."""
        idx = np.flatnonzero(~self.is_clean)
        return idx[np.argsort(-self.scores[idx], kind="stable")]

    def ranking(self) -> np.ndarray:
        """All indices, the most suspicious first."""
        return np.argsort(-self.scores, kind="stable")


@dataclass
class DetectionQuality:
    """A detector against the truth: ``recall`` (poisoned found), ``fpr`` (clean flagged),
    ``precision``, ``auroc`` of the scores, the counts, and the detector's ``seconds``."""

    method: str
    recall: float
    fpr: float
    precision: float
    auroc: float
    flagged: int
    poisoned: int
    samples: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def score_detection(result: DetectionResult, poisoned: np.ndarray | torch.Tensor) -> DetectionQuality:
    """Compare ``result`` with the true poison mask (bool ``[N]``)."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(poisoned.cpu() if isinstance(poisoned, torch.Tensor) else poisoned, dtype=bool)
    if truth.shape != result.scores.shape:
        raise DataError(f"the poison mask has {truth.shape[0]} entries for {result.scores.shape[0]} scores.")
    flagged = ~result.is_clean
    tp = int((flagged & truth).sum())
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    scores = np.nan_to_num(result.scores, nan=0.0, posinf=np.finfo(np.float64).max)
    auroc = float(roc_auc_score(truth, scores)) if 0 < n_pos < truth.size else float("nan")
    return DetectionQuality(
        result.method,
        recall=tp / n_pos if n_pos else float("nan"),
        fpr=int((flagged & ~truth).sum()) / n_neg if n_neg else float("nan"),
        precision=tp / int(flagged.sum()) if flagged.any() else float("nan"),
        auroc=auroc, flagged=int(flagged.sum()), poisoned=n_pos, samples=int(truth.size), seconds=result.seconds,
    )


def as_features(features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: features float64 ``[N, D]``, labels int64 ``[N]``."""
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if f.ndim != 2:
        raise DataError(f"features must be [N, D] (got shape {f.shape}).")
    if y.ndim != 1 or y.shape[0] != f.shape[0]:
        raise DataError(f"labels must be [N] with N = {f.shape[0]} (got shape {y.shape}).")
    if f.shape[0] == 0:
        raise DataError("no samples to examine (an empty data set).")
    if not np.isfinite(f).all():
        raise DataError("the features hold NaN or infinite values.")
    if y.min() < 0:
        raise DataError(f"labels must not be negative (found {int(y.min())}).")
    return f.astype(np.float64, copy=False), y.astype(np.int64, copy=False)


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v − median) / (1.4826 · MAD)``: how many robust standard deviations above the middle."""
    med = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - med))
    if mad <= 0:
        mad = values.std() or 1.0
    return (values - med) / mad


def check_positive(name: str, value: float, upper: float | None = None) -> float:
    if not value > 0 or (upper is not None and value > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise ConfigError(f"{name} must be positive{bound} (got {value}).")
    return float(value)


@contextmanager
def timed(holder: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    holder["seconds"] = time.perf_counter() - start


def per_class(labels: np.ndarray, min_size: int = 2) -> Iterator[tuple[int, np.ndarray]]:
    """``(label, indices)`` for each label with at least ``min_size`` samples."""
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size >= min_size:
            yield int(c), idx


ClassScorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, dict[str, Any]]]


def per_class_detection(features, labels, score_class: ClassScorer, method: str, params: dict[str, Any],
                        min_size: int = 3) -> DetectionResult:
    """Run ``score_class`` on each label's features (``[n_c, D]`` -> scores ``[n_c]``, flags ``[n_c]``,
    info) and gather a :class:`DetectionResult`; labels with fewer than ``min_size`` samples are
    left unscored and clean. Validates the input and times the whole."""
    f, y = as_features(features, labels)
    scores = np.zeros(len(y))
    is_clean = np.ones(len(y), dtype=bool)
    info: dict[int, dict[str, Any]] = {}
    timing: dict[str, float] = {}
    with timed(timing):
        for c, idx in per_class(y, min_size=min_size):
            s, flag, extra = score_class(f[idx])
            scores[idx] = s
            is_clean[idx[flag]] = False
            info[c] = {"samples": int(idx.size), "flagged": int(flag.sum()), **extra}
    return DetectionResult(method, scores, is_clean, timing["seconds"], params, info)

"""Figures of the inheritance study (Zhang et al., ICSE 2022, "ReMoS").

- ACC: share of clean test inputs classified correctly.
- DIR (defect inheritance rate), adversarial inputs: among the test inputs the student gets
  right when clean, the share it gets wrong when the crafted version is fed instead.
- DIR, backdoor: among the non-target test inputs the student gets right when clean, the
  share predicted as the target label when the trigger is applied.
- rACC / rDIR: a method's figure divided by the ``finetune`` student's on the same task;
  averaged over tasks when there are several.

All rates are fractions in ``[0, 1]``; an undefined rate (no eligible input) is ``nan``.
Predictions and labels are 1-D integer tensors of the same length.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from safetransfer.errors import DataError


def _check(*tensors: torch.Tensor) -> None:
    n = tensors[0].shape
    for t in tensors:
        if t.dim() != 1 or t.shape != n:
            raise DataError(f"Predictions and labels must be 1-D of equal length (got shapes {[tuple(t.shape) for t in tensors]}).")


def _rate(hits: torch.Tensor, eligible: torch.Tensor) -> float:
    count = int(eligible.sum())
    return float((hits & eligible).sum()) / count if count else math.nan


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``predictions`` equal to ``labels`` (``nan`` for none)."""
    _check(predictions, labels)
    return _rate(predictions == labels, torch.ones_like(labels, dtype=torch.bool))


def adversarial_dir(clean_pred: torch.Tensor, crafted_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Among inputs right when clean, the share wrong on their crafted version."""
    _check(clean_pred, crafted_pred, labels)
    return _rate(crafted_pred != labels, clean_pred == labels)


def backdoor_dir(clean_pred: torch.Tensor, triggered_pred: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    """Among non-target inputs right when clean, the share predicted ``target`` with the trigger."""
    _check(clean_pred, triggered_pred, labels)
    return _rate(triggered_pred == target, (clean_pred == labels) & (labels != target))


def label_flip_rate(triggered_pred: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    """LFR (Kurita et al. 2020): among triggered inputs whose true label is not ``target``, the share
    predicted as ``target`` (not conditioned on the clean prediction, unlike :func:`backdoor_dir`)."""
    _check(triggered_pred, labels)
    return _rate(triggered_pred == target, labels != target)


def relative(value: float | None, reference: float | None) -> float | None:
    """``value / reference``; ``None`` when either is missing or not finite, or the reference is 0."""
    if value is None or reference is None or not math.isfinite(value) or not math.isfinite(reference) or reference == 0:
        return None
    return value / reference


def mean_defined(values: Iterable[float | None]) -> float | None:
    """The mean of the finite values, ``None`` when there are none."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None

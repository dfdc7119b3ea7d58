"""JSON-safe values: tensors, numpy scalars and paths as plain numbers, lists and strings; NaN as null."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch


def jsonable(x: Any) -> Any:
    """``x`` with tensors (one element: a number, else nested lists), numpy scalars and paths made JSON-able."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (str, bytes)):  # numpy scalars
        try:
            return x.item()
        except (TypeError, ValueError):
            pass
    return x


def finite_or_none(value: float | None) -> float | None:
    """``value``, or ``None`` where it is ``None``, NaN or infinite (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def nan_to_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float, however deeply nested in dicts and lists, as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value

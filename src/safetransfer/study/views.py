"""Why a transfer method cuts a defect: the figures behind the study report's interpretation views.

Per student (computed once, cached in the student's folder as ``views.json``):

- ``curve``: the training loss against steps (the convergence view of the ReMoS paper's
  efficiency figure; validation accuracy too when the run recorded it);
- ``weight_change``: how far the student moved from the teacher it was made from, per
  sliceable layer (relative L2 change ``‖s − t‖ / ‖t‖``) and overall quantiles of ``|s − t|``;
- ``slice``: for ReMoS and magnitude pruning, the share of each layer's weights excluded and
  their mean magnitude against the kept ones' (the paper finds deeper layers lose more
  large weights);
- ``trigger_shift`` (students of a backdoored teacher): how far the trigger moves the
  penultimate features, ``‖mean f(triggered) − mean f(clean)‖ / √(mean per-feature variance of
  f(clean))`` on the non-target evaluation inputs; the teacher's own value is the reference.
"""

from __future__ import annotations

from typing import Any

import torch

from safetransfer.data.base import Split
from safetransfer.evaluate import predict_features
from safetransfer.models.wrapper import TransferModel

VIEWS_VERSION = 1
QUANTILES = (0.5, 0.9, 0.99)


def training_curve(result: dict[str, Any]) -> list[dict[str, float]]:
    """``[{step, loss[, val_accuracy]}]`` from a transfer result's training history."""
    history = (result.get("train") or {}).get("history") or []
    keep = ("step", "loss", "val_accuracy")
    return [{k: float(h[k]) for k in keep if k in h} for h in history]


@torch.no_grad()
def weight_change(teacher: TransferModel, student: TransferModel) -> dict[str, Any]:
    """Per sliceable layer the relative change, and quantiles of the absolute change over all of them."""
    teacher_layers = dict(teacher.sliceable_layers())
    layers, deltas = [], []
    for name, module in student.sliceable_layers():
        ref = teacher_layers.get(name)
        if ref is None or ref.weight.shape != module.weight.shape:
            continue
        t, s = ref.weight.detach().float(), module.weight.detach().float()
        d = (s - t).flatten()
        norm = float(t.norm())
        layers.append({"name": name, "relative_change": float(d.norm()) / norm if norm > 0 else None})
        deltas.append(d.abs())
    if not deltas:
        return {"layers": [], "quantiles": {}}
    every = torch.cat(deltas)
    sample = every[torch.randperm(every.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    q = torch.quantile(sample, torch.tensor(QUANTILES))
    return {"layers": layers,
            "quantiles": {f"p{int(100 * p)}": float(v) for p, v in zip(QUANTILES, q)} | {"max": float(every.max())}}


def slice_view(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The slice's per-layer summary (excluded share, mean |w| excluded and kept), when the method sliced."""
    summary = result.get("slice")
    if not summary:
        return None
    keys = ("name", "weights", "excluded_share", "mean_abs_excluded", "mean_abs_kept")
    return [{k: layer.get(k) for k in keys} for layer in summary.get("layers", [])]


def trigger_shift(model: TransferModel, clean: Split, trigger: Any, target: int) -> float | None:
    """The trigger's displacement of the mean penultimate feature, in clean-feature standard deviations."""
    keep = torch.nonzero(clean.labels != target).flatten()
    if keep.numel() < 2:
        return None
    x = clean.inputs[keep]
    f_clean = predict_features(model, x).double()
    f_trig = predict_features(model, trigger.apply(x)).double()
    spread = float(f_clean.var(dim=0).mean().sqrt())
    if spread == 0:
        return None
    return float((f_trig.mean(0) - f_clean.mean(0)).norm()) / spread


def student_views(teacher: TransferModel, student: TransferModel, result: dict[str, Any],
                  backdoor: tuple[Split, Any, int] | None = None) -> dict[str, Any]:
    """All the views of one student (see the module doc); ``backdoor`` = (eval split, trigger, target)."""
    views: dict[str, Any] = {"version": VIEWS_VERSION, "curve": training_curve(result),
                             "weight_change": weight_change(teacher, student), "slice": slice_view(result)}
    if backdoor is not None:
        views["trigger_shift"] = trigger_shift(student, *backdoor)
    return views

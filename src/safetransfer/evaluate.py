"""Evaluation: predictions in batches, accuracy, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from safetransfer.data.base import Split
from safetransfer.errors import DataError
from safetransfer.metrics import adversarial_dir
from safetransfer.models.wrapper import TransferModel, move_inputs


def predict_logits(
    model: TransferModel, inputs: torch.Tensor | list[str], batch_size: int = 256, progress: bool = False
) -> torch.Tensor:
    """Logits ``[N, num_classes]`` of raw data-set inputs, in eval mode, in batches."""
    return _batched(model, inputs, model, model.num_classes, batch_size, progress, "eval")


def predict_features(
    model: TransferModel, inputs: torch.Tensor | list[str], batch_size: int = 256, progress: bool = False
) -> torch.Tensor:
    """Penultimate features ``[N, feature_dim]`` of raw data-set inputs, in eval mode, in batches."""
    return _batched(model, inputs, model.features, model.feature_dim, batch_size, progress, "features")


@torch.no_grad()
def _batched(model: TransferModel, inputs: torch.Tensor | list[str], forward, width: int, batch_size: int,
             progress: bool, desc: str) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = model.device
    n = len(inputs) if isinstance(inputs, list) else int(inputs.shape[0])
    chunks = []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    try:
        for start in starts:
            raw = inputs[start : start + batch_size]
            chunks.append(forward(move_inputs(model.preprocess(raw), device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, width)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (one bincount)."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class EvalResult:
    """Accuracy and per-class figures of a model on one split."""

    accuracy: float
    n: int
    precision: list[float]
    recall: list[float]
    confusion: list[list[int]]
    class_names: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


# The most classes whose confusion matrix is built (K x K counts): ImageNet-1k's 1,000 fit; with
# more classes the per-class figures are computed from K-sized counts and ``confusion`` is empty.
MAX_CONFUSION_CLASSES = 1000


def metrics_from_predictions(
    labels: torch.Tensor, predictions: torch.Tensor, class_names: list[str]
) -> EvalResult:
    """Accuracy, precision and recall per class (0 where undefined), confusion matrix (empty
    beyond :data:`MAX_CONFUSION_CLASSES` classes; memory stays linear in the class count)."""
    k = len(class_names)
    labels, predictions = labels.long(), predictions.long()
    hit = labels == predictions
    tp = torch.bincount(labels[hit], minlength=k)[:k].double()
    predicted = torch.bincount(predictions, minlength=k)[:k].double()
    actual = torch.bincount(labels, minlength=k)[:k].double()
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
    n = int(labels.numel())
    return EvalResult(
        accuracy=float(tp.sum() / max(n, 1)),
        n=n,
        precision=[round(float(v), 6) for v in precision],
        recall=[round(float(v), 6) for v in recall],
        confusion=confusion_matrix(labels, predictions, k).tolist() if k <= MAX_CONFUSION_CLASSES else [],
        class_names=list(class_names),
    )


def evaluate(
    model: TransferModel, split: Split, class_names: list[str] | None = None, batch_size: int = 256,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on ``split``; class names default to the model's or ``0..K-1``."""
    names = class_names or model.config.class_names or [str(i) for i in range(model.num_classes)]
    if len(names) != model.num_classes:

        raise DataError(
            f"The data set has {len(names)} classes but the model's head has {model.num_classes} outputs."
        )
    if len(split) > 0 and int(split.labels.max()) >= model.num_classes:

        raise DataError(f"Labels go up to {int(split.labels.max())} but the model has {model.num_classes} classes.")
    logits = predict_logits(model, split.inputs, batch_size, progress=progress)
    return metrics_from_predictions(split.labels, logits.argmax(1), names)


def crafted_input_dir(
    model: TransferModel, clean: Split, crafted_inputs: torch.Tensor | list[str],
    clean_pred: torch.Tensor | None = None,
) -> float:
    """The DIR of crafted inputs on ``model``: among the ``clean`` inputs it gets right, the share
    whose crafted version (``crafted_inputs``, in the same order) it gets wrong. ``clean_pred``:
    its predictions on ``clean`` where they are already known."""
    if clean_pred is None:
        clean_pred = predict_logits(model, clean.inputs).argmax(1)
    crafted_pred = predict_logits(model, crafted_inputs).argmax(1)
    return adversarial_dir(clean_pred, crafted_pred, clean.labels)

"""The building blocks the transfer methods share: the student's copy, re-initialisation, frozen
reference copies, the slice hook that keeps excluded weights at zero, and a digest of weights.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from safetransfer.data.base import ClassificationData
from safetransfer.models.wrapper import TransferModel
from safetransfer.models.zoo import build_from_config
from safetransfer.train import TrainHook
from safetransfer.transfer.config import TransferConfig


def new_student(teacher: TransferModel, data: ClassificationData, config: TransferConfig) -> TransferModel:
    """The teacher's copy with a new seeded head for ``data`` (the teacher untouched)."""
    return teacher.with_head(data.num_classes, seed=config.seed, class_names=list(data.class_names))


def reinit_body(student: TransferModel, seed: int) -> TransferModel:
    """Replace every body tensor (weights and BatchNorm statistics) with a fresh seeded build's, in place.

    The fresh weights are the architecture's own initialisation (``create_model(pretrained=False)``:
    BERT's N(0, 0.02), the conv nets' PyTorch defaults), the head is left as it is.
    """

    fresh = build_from_config(student.config, pretrained=False, tokenizer=student.tokenizer, seed=seed)
    state = fresh.body.state_dict()
    with torch.no_grad():
        for name, tensor in student.body.state_dict().items():
            tensor.copy_(state[name].to(tensor.device))
    return student


def frozen_copy(model: TransferModel) -> TransferModel:
    """A deep copy for reference only: eval mode, no gradients (the original untouched)."""
    copy_ = model.clone()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_.eval()


class SliceHook(TrainHook):
    """Carries a :class:`safetransfer.slicing.Slice`; with ``frozen`` re-zeroes its excluded weights after every step.

    The masks are cached per parameter as multiplicative 0/1 tensors, so the after-step work is
    one ``w.mul_(mask)`` per sliced layer.
    """

    def __init__(self, slice_: Any, frozen: bool, profile: Any = None) -> None:
        self.slice = slice_
        self.frozen = frozen
        self.profile = profile  # the CoverageProfile the slice came from (remos)
        self._masks: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _build_masks(self, model: TransferModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
        keep = slice_keep_masks(self.slice, model)
        out = []
        for name, mask in keep.items():
            weight = model.layer(name).weight
            out.append((weight, mask.to(device=weight.device, dtype=weight.dtype)))
        return out

    def after_step(self, model: TransferModel, step: int) -> None:
        if not self.frozen:
            return
        if self._masks is None or any(w.device != m.device for w, m in self._masks):
            self._masks = self._build_masks(model)
        with torch.no_grad():
            for weight, mask in self._masks:
                weight.mul_(mask)


def slice_keep_masks(slice_: Any, model: TransferModel) -> dict[str, torch.Tensor]:
    """``{layer name: bool mask of the kept weights}`` of a slice, shaped as each layer's weight."""
    masks = getattr(slice_, "masks", None)
    if not isinstance(masks, dict):
        raise TypeError("the slice has no 'masks' dict of keep-masks")
    return {name: m.bool().reshape(model.layer(name).weight.shape) for name, m in masks.items()}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of every tensor of ``model``'s state dict, names included."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]

"""Stage outputs of a model's body: where DELTA and Renofeation distil features and drop them out.

A *stage* is a point in the body where the feature map changes resolution (vision) or a whole
encoder layer ends (text), the places the two papers use on ResNets ("the output of each
``layerN``") translated to the zoo's architectures:

- ``efficientnet-lite0``: the last MBConv block of every resolution stage of ``body.net._blocks``
  (a block is the last of its stage when the next one has stride > 1, read from the block
  args), then ``body.net._bn1`` (the 1280-channel head conv's BatchNorm, before its ReLU6);
  at 32 px that is 5 blocks (/2, /4, /8, /16, /32) + the head, 6 stages.
- ``small-cnn`` / ``tiny-cnn``: each ``MaxPool2d`` output and the last conv block's ReLU.
- ``minilm-l6`` / ``tiny-bert``: each ``body.bert.encoder.layer.{i}`` (its output is a tensor
  ``[B, T, H]`` in recent ``transformers``, a tuple whose first item is that in older ones);
  ``hf-encoder``: its family's blocks likewise (``body.encoder.transformer.layer.{i}`` in DistilBERT).

:class:`StageHooks` attaches forward hooks to these modules: it records their outputs (for
distillation) and can replace them with a dropped-out copy in training mode (for Renofeation).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from safetransfer.errors import ConfigError
from safetransfer.models.text import encoder_block_names
from safetransfer.models.wrapper import TransferModel
from safetransfer.train import TrainHook

__all__ = ["stage_names", "stage_tensor", "replace_stage_tensor", "StageHooks"]


def _stride(block: nn.Module) -> int:
    s = block._block_args.stride  # an int, or a list like [2] in the TF port's block args
    if isinstance(s, (list, tuple)):
        s = s[0]
    return int(s)


def _efficientnet_stages(model: TransferModel) -> list[str]:
    blocks = model.body.net._blocks
    names = [
        f"body.net._blocks.{i}"
        for i in range(len(blocks))
        if i == len(blocks) - 1 or _stride(blocks[i + 1]) > 1
    ]
    return names + ["body.net._bn1"]


def _small_cnn_stages(model: TransferModel) -> list[str]:
    features = model.body.features
    names, last_relu = [], None
    for name, m in features.named_children():
        if isinstance(m, nn.MaxPool2d):
            names.append(f"body.features.{name}")
        elif isinstance(m, nn.ReLU):
            last_relu = f"body.features.{name}"
    if last_relu is not None and last_relu not in names:
        names.append(last_relu)
    return names


def _encoder_stages(model: TransferModel) -> list[str]:
    return encoder_block_names(model.body, prefix="body.")


_STAGES: dict[str, Callable[[TransferModel], list[str]]] = {
    "efficientnet-lite0": _efficientnet_stages,
    "small-cnn": _small_cnn_stages,
    "tiny-cnn": _small_cnn_stages,
    "minilm-l6": _encoder_stages,
    "tiny-bert": _encoder_stages,
    "hf-encoder": _encoder_stages,
}


def stage_names(model: TransferModel) -> list[str]:
    """Qualified module names (as in ``model.named_modules()``) of the body's stage outputs, in order."""
    arch = model.config.arch
    if arch not in _STAGES:
        raise ConfigError(
            f"No stage outputs are defined for architecture '{arch}' (feature distillation and stage "
            f"dropout need them); known: {', '.join(sorted(_STAGES))}."
        )
    return _STAGES[arch](model)


def stage_tensor(output: Any) -> torch.Tensor:
    """The feature tensor of a stage module's output (a tensor, or the first item of a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the feature tensor in a stage output of type {type(output).__name__}")


def replace_stage_tensor(output: Any, tensor: torch.Tensor) -> Any:
    """``output`` with its feature tensor replaced by ``tensor`` (same container type)."""
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]]) if isinstance(output, list) else (tensor, *output[1:])


class StageHooks:
    """Forward hooks on a model's stage modules: record outputs and/or apply dropout in training.

    ``record``: keep each stage's (pre-dropout) output in :attr:`outputs` (name -> tensor), the
    latest forward's; ``dropout``: with ``p > 0``, each stage output is replaced in training mode
    by ``Dropout2d`` (4-D feature maps: whole channels) or ``Dropout`` (token features) of it.
    Call :meth:`remove` to detach the hooks (idempotent).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], *, record: bool = False, dropout: float = 0.0) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"Stage module(s) not found in the model: {', '.join(missing)}.")
        self.names = list(names)
        self.record, self.p = record, float(dropout)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[n].register_forward_hook(self._make_hook(n)) for n in self.names
        ]

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            x = stage_tensor(output)
            if self.record:
                self.outputs[name] = x
            if self.p > 0 and module.training:
                dropped = torch.nn.functional.dropout2d(x, self.p, True) if x.dim() == 4 else torch.nn.functional.dropout(x, self.p, True)
                return replace_stage_tensor(output, dropped)
            return None

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """The recorded outputs of the latest forward, forgetting them (frees the graph they hold)."""
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs = {}

    @property
    def attached(self) -> bool:
        return bool(self._handles)


class StageDropout(TrainHook):
    """Dropout after each stage module of the student, in training mode only (forward hooks)."""

    def __init__(self, student: TransferModel, p: float, names: Sequence[str] | None = None) -> None:
        self.names = list(names) if names is not None else stage_names(student)
        self.p = float(p)
        self._hooks = StageHooks(student, self.names, dropout=self.p)

    def after_training(self, model: TransferModel) -> None:
        self.close()

    def close(self) -> None:
        self._hooks.remove()

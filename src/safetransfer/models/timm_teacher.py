"""A ``timm`` architecture with a local weights file as a teacher.

``timm`` (PyTorch Image Models) is not a dependency of safetransfer: it requires torchvision,
which this project does not install. A user who has it installed passes the architecture by
name and the weights file (safetensors; a PyTorch file only through ``weights_only=True``); the
model is built by ``timm.create_model(arch, pretrained=False, num_classes=0)`` (no download:
its forward gives the pooled features), the weights are loaded after their shapes are checked
against it (the checkpoint's classifier, named by the architecture's ``pretrained_cfg``, is
dropped), and the architecture's own preprocessing (``mean``, ``std``, ``input_size`` of its
``pretrained_cfg``) becomes the teacher's. The result is a
:meth:`TransferModel.from_module <safetransfer.models.wrapper.TransferModel.from_module>` model:
ReMoS, the transfer methods and the detectors treat it as any image teacher.

On the command line: ``--teacher timm:ARCH@WEIGHTS`` (e.g. ``timm:resnet18@resnet18.safetensors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetransfer.errors import CheckpointError, ConfigError
from safetransfer.models.serialization import (
    read_state_dict,
    safetensors_shapes,
    shape_mismatches,
)
from safetransfer.models.wrapper import TransferModel

__all__ = ["TIMM_PREFIX", "parse_timm_spec", "timm_teacher"]

TIMM_PREFIX = "timm:"


def parse_timm_spec(spec: str) -> tuple[str, Path]:
    """``"timm:ARCH@WEIGHTS"`` -> ``(ARCH, Path(WEIGHTS))``; a clear error for anything else."""
    body = spec.removeprefix(TIMM_PREFIX)
    arch, sep, weights = body.partition("@")
    if not spec.startswith(TIMM_PREFIX) or not sep or not arch or not weights:
        raise ConfigError(f"a timm teacher is written timm:ARCH@WEIGHTS (e.g. timm:resnet18@resnet18.safetensors), "
                          f"got {spec!r:.120}.")
    return arch, Path(weights)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("a timm teacher needs the timm package, which safetransfer does not install (it requires "
                          "torchvision): pip install timm") from None
    return timm


def _classifier_prefixes(cfg: dict[str, Any]) -> tuple[str, ...]:
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(n for n in names if isinstance(n, str))
    return tuple(f"{n}." for n in names)


def _needed(expected: dict[str, tuple[int, ...]], found: Any) -> dict[str, tuple[int, ...]]:
    """The tensors a file must hold: all but BatchNorm step counters it leaves out (timm's files often do)."""
    return {k: v for k, v in expected.items() if k in found or not k.endswith("num_batches_tracked")}


def timm_teacher(arch: str, weights: str | Path, num_classes: int, *, image_size: int | None = None,
                 class_names: list[str] | None = None, seed: int = 0) -> TransferModel:
    """The timm architecture ``arch`` with the weights in ``weights`` and a new ``num_classes`` head
    (seeded); inputs at ``image_size`` (default: the architecture's ``input_size``), normalised by
    its ``mean``/``std``. Raises :class:`ConfigError` for an unknown architecture or without timm,
    :class:`CheckpointError` when the file does not hold this architecture's weights."""
    timm = _timm()
    if not (isinstance(arch, str) and timm.is_model(arch)):
        raise ConfigError(f"{arch!r:.80} is not a timm architecture (timm.list_models() names them).")
    weights = Path(weights)
    body = timm.create_model(arch, pretrained=False, num_classes=0)
    cfg = dict(getattr(body, "pretrained_cfg", None) or {})
    drop = _classifier_prefixes(cfg)
    expected = {k: tuple(v.shape) for k, v in body.state_dict().items()}
    if weights.suffix == ".safetensors":  # shapes from the header, before any tensor is read
        declared = {k: v for k, v in safetensors_shapes(weights).items() if not k.startswith(drop)}
        problems = shape_mismatches(_needed(expected, declared), declared)
        if problems:
            raise CheckpointError(f"{weights} does not hold {arch} weights: {problems}.")
    state = {k: v for k, v in read_state_dict(weights).items() if not k.startswith(drop)}
    problems = shape_mismatches(_needed(expected, state), {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise CheckpointError(f"{weights} does not hold {arch} weights: {problems}.")
    body.load_state_dict(state, strict=False)  # every tensor but BatchNorm's step counters is checked present
    size = cfg.get("input_size") or (3, 224, 224)
    in_channels, native = int(size[0]), int(size[-1])
    mean, std = cfg.get("mean", (0.0,) * in_channels), cfg.get("std", (1.0,) * in_channels)
    return TransferModel.from_module(
        body, int(body.num_features), num_classes, image_size=image_size or native, in_channels=in_channels,
        mean=[float(v) for v in mean], std=[float(v) for v in std], class_names=class_names, name=f"timm:{arch}",
        seed=seed)

"""Saving and loading models: safetensors weights + a JSON config, never an untrusted pickle.

A saved model is a folder::

    model.safetensors   every tensor of the state dict (head included)
    config.json         {"format": "safetransfer-model/1", "config": ModelConfig, "meta": {...}}
    tokenizer/          text models only: the tokenizer files

A user's own weights load from a ``.safetensors`` file plus a config JSON; a PyTorch
``.pt``/``.pth``/``.bin`` file is read with ``torch.load(weights_only=True)`` only, and an
unsafe pickle is refused with a message saying how to convert it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from safetransfer.errors import CheckpointError, ConfigError
from safetransfer.models.serialization import (
    load_state_into,
    read_state_dict,
    shape_mismatches,
)
from safetransfer.models.text import load_tokenizer
from safetransfer.models.wrapper import ModelConfig, TransferModel
from safetransfer.models.zoo import (
    MAX_IMAGE_SIZE,
    MAX_IN_CHANNELS,
    MAX_TOKENS,
    build_from_config,
    check_model_config,
    get_arch,
)
from safetransfer.safe_paths import MAX_CONFIG_BYTES, read_json_bounded, regular_file
from safetransfer.validation import MAX_CLASSES, bounded_int

FORMAT = "safetransfer-model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
MODEL_DIR = "model"  # the sub-folder of a job's output folder (train, transfer) that holds its saved model


def save_model(model: TransferModel, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save ``model`` to ``folder`` (created) as safetensors + JSON config; returns the folder.

    Written into a temporary sibling folder first and moved into place, so an interrupted
    save leaves the previous model intact.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT, "arch": model.config.arch})
        doc = {"format": FORMAT, "config": model.config.to_dict(), "meta": meta or {}}
        (staging / CONFIG_FILE).write_text(json.dumps(doc, indent=2))
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_config(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The :class:`ModelConfig` and meta of a saved model's ``config.json`` (or a bare config JSON).

    The file must be a regular file of at most :data:`~safetransfer.safe_paths.MAX_CONFIG_BYTES`
    (a FIFO or a device is never opened); a malformed file raises :class:`CheckpointError`, a
    field of the wrong type or beyond its bound (``num_classes: 1e8``, ``image_size: true``)
    :class:`~safetransfer.errors.ConfigError` naming the file and the field
    (:func:`~safetransfer.models.zoo.check_model_config`), before any model is allocated.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No model config at {path}: a saved model folder holds {CONFIG_FILE}.")
    doc = read_json_bounded(path, "model config", MAX_CONFIG_BYTES, CheckpointError)
    cfg = doc.get("config", doc) if isinstance(doc, dict) else None
    if not isinstance(cfg, dict) or "arch" not in cfg or "num_classes" not in cfg:
        raise CheckpointError(
            f"{path} is not a safetransfer model config: it needs at least 'arch' and 'num_classes' "
            f"(save models with safetransfer to get one)."
        )
    meta = doc.get("meta", {}) if "config" in doc else {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: 'meta' must be a JSON object.")
    try:
        base = _default_config(cfg, str(path))
        merged = {**base.to_dict(), **cfg}
        return check_model_config(ModelConfig.from_dict(merged), str(path)), meta
    except TypeError as err:
        raise CheckpointError(f"{path}: bad model config ({err}).") from None


def _default_config(cfg: dict[str, Any], source: str) -> ModelConfig:
    """The zoo's default config of ``cfg["arch"]`` at ``cfg``'s sizes, each size checked first."""
    if not isinstance(cfg["arch"], str):
        raise ConfigError(f"{source}: 'arch' must be a zoo model's name, got {cfg['arch']!r:.80}.")
    spec = get_arch(cfg["arch"])
    num_classes = bounded_int(cfg["num_classes"], "num_classes", 1, MAX_CLASSES, source)
    sizes = {key: None if cfg.get(key) is None else bounded_int(cfg[key], key, 0, high, source)
             for key, high in (("image_size", MAX_IMAGE_SIZE), ("in_channels", MAX_IN_CHANNELS),
                               ("max_length", MAX_TOKENS))}
    if spec.modality == "text" and isinstance(cfg.get("options"), dict) and ("bert" in cfg["options"] or "encoder" in cfg["options"]):
        return ModelConfig(arch=cfg["arch"], num_classes=num_classes, modality="text")
    return spec.make_config(num_classes, sizes["image_size"] or None, sizes["in_channels"] or None,
                            sizes["max_length"] or None)


def load_model(path: str | Path, config: str | Path | None = None) -> TransferModel:
    """Load a model saved by :func:`save_model`, or a user's weights file plus ``config`` JSON.

    Every tensor must be present with the right shape; a mismatch is reported by name. The
    config is checked against sane bounds, then against the weights' shapes on a model built
    on the ``meta`` device (no memory), before the real model is allocated: a config.json
    that asks for more than its weights hold never allocates it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No such model: {path} (expected a saved model folder or a .safetensors file).")
    if path.is_dir():
        weights, cfg_path, tok_dir = path / WEIGHTS_FILE, Path(config) if config else path / CONFIG_FILE, path / TOKENIZER_DIR
        if not weights.exists():
            raise CheckpointError(f"{path} holds no {WEIGHTS_FILE}: not a saved safetransfer model.")
    else:
        if config is None:
            sibling = path.parent / CONFIG_FILE
            if not sibling.exists():
                raise CheckpointError(f"{path} needs a config: pass --config CONFIG.json (with 'arch' and 'num_classes').")
            config = sibling
        weights, cfg_path, tok_dir = path, Path(config), path.parent / TOKENIZER_DIR
    regular_file(weights, "weights file", error=CheckpointError)
    model_config, _ = read_config(cfg_path)
    state = read_state_dict(weights)
    with torch.device("meta"):  # the architecture's shapes, without allocating its weights
        skeleton = build_from_config(model_config, pretrained=False, tokenizer=_NO_TOKENIZER)
    problems = shape_mismatches({k: tuple(v.shape) for k, v in skeleton.state_dict().items()},
                                {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise CheckpointError(
            f"Weights in {weights} do not match the model {cfg_path} describes ({model_config.arch}): {problems}. "
            f"Check the config (arch, num_classes, image size) that goes with these weights."
        )
    tokenizer = load_tokenizer(tok_dir) if model_config.modality == "text" and tok_dir.exists() else None
    model = build_from_config(model_config, pretrained=False, tokenizer=tokenizer)
    load_state_into(model, state, source=str(weights))
    return model


_NO_TOKENIZER = object()  # stands in for a tokenizer where a model is built on the meta device



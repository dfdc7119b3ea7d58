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
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from safetransfer.errors import CheckpointError, ConfigError
from safetransfer.files import atomic_write_text
from safetransfer.models.wrapper import ModelConfig, TransferModel
from safetransfer.pickle_analysis import checkpoint_structure
from safetransfer.safe_paths import (
    MAX_CONFIG_BYTES,
    read_text_bounded,
    regular_file,
)
from safetransfer.validation import MAX_CLASSES, bounded_int

FORMAT = "safetransfer-model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
MODEL_DIR = "model"  # the sub-folder of a job's output folder (train, transfer) that holds its saved model
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def save_tensors_and_json(folder: str | Path, tensors: dict[str, torch.Tensor], tensors_name: str,
                          doc: dict[str, Any], json_name: str) -> Path:
    """Write ``tensors`` (safetensors) and ``doc`` (JSON) into ``folder``, each atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / tensors_name
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{tensors_name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(folder / json_name, json.dumps(doc, indent=2))
    return folder


def load_tensors_and_json(folder: str | Path, tensors_name: str, json_name: str, fmt: str, what: str
                          ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read what :func:`save_tensors_and_json` wrote; ``doc["format"]`` must be ``fmt``.

    Missing, unreadable or foreign files raise a :class:`CheckpointError` naming ``what`` it should be.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    doc_path, tensors_path = folder / json_name, folder / tensors_name
    if not doc_path.exists() or not tensors_path.exists():
        raise CheckpointError(f"{folder} is not a saved {what} (needs {json_name} and {tensors_name}).")
    regular_file(tensors_path, f"{what} tensors file", error=CheckpointError)
    text = read_text_bounded(doc_path, f"{what} JSON", MAX_CONFIG_BYTES, CheckpointError)
    try:
        doc = json.loads(text)
        tensors = load_file(str(tensors_path))
    except (json.JSONDecodeError, OSError, ValueError) as err:
        raise CheckpointError(f"{folder}: unreadable {what} ({err}).") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CheckpointError(f"{doc_path} is not a {fmt} file.")
    return doc, tensors


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint checked first; an unsafe or corrupt file is a :class:`CheckpointError`.

    Before torch reads it, :func:`~safetransfer.pickle_analysis.checkpoint_structure` checks the
    file without loading it: every import on the weights allow-list, the pickles complete,
    nesting and shared containers bounded (a 1 KB file of shared list references would
    otherwise make every walk over the result exponential), storages no larger than the file.
    """
    path = Path(path)
    regular_file(path, "checkpoint file", error=CheckpointError)
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): not a PyTorch checkpoint.")
    if not head.startswith(b"PK\x03\x04") and head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (neither a zip checkpoint nor a pickle).")
    structure = checkpoint_structure(str(path))
    unsafe = [p for p in structure.problems if p.startswith("it imports")]
    if unsafe:
        raise CheckpointError(
            f"{path} is a pickle that needs arbitrary code to load, refused for safety "
            f"({unsafe[0]}; `safetransfer scan` lists what it imports). If you trust it, convert it "
            f"once in a sandbox: `safetensors.torch.save_file(torch.load(p, weights_only=False), 'model.safetensors')`."
        )
    if structure.problems:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {structure.problems[0]}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        why = f"it imports {found.group(1)}" if found else str(err).splitlines()[0][:160]
        raise CheckpointError(
            f"{path} is a pickle that needs arbitrary code to load, refused for safety "
            f"(torch.load weights_only=True failed: {why}; `safetransfer scan` lists what it imports). If you trust it, convert it "
            f"once in a sandbox: `safetensors.torch.save_file(torch.load(p, weights_only=False), 'model.safetensors')`."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            RecursionError, MemoryError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}).") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, or of a weights-only PyTorch file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No such weights file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a valid safetensors file ({err}).") from None
    if path.suffix in PICKLE_SUFFIXES:
        obj = safe_torch_load(path)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors.")
        return obj
    raise CheckpointError(f"Unknown weights format '{path.suffix}' ({path}): use .safetensors (or a .pt state dict).")


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
    from safetransfer.models.zoo import check_model_config

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No model config at {path}: a saved model folder holds {CONFIG_FILE}.")
    text = read_text_bounded(path, "model config", MAX_CONFIG_BYTES, CheckpointError)
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({type(err).__name__}: {err}).") from None
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
    from safetransfer.models.zoo import (
        MAX_IMAGE_SIZE,
        MAX_IN_CHANNELS,
        MAX_TOKENS,
        get_arch,
    )

    if not isinstance(cfg["arch"], str):
        raise ConfigError(f"{source}: 'arch' must be a zoo model's name, got {cfg['arch']!r:.80}.")
    spec = get_arch(cfg["arch"])
    num_classes = bounded_int(cfg["num_classes"], "num_classes", 1, MAX_CLASSES, source)
    sizes = {key: None if cfg.get(key) is None else bounded_int(cfg[key], key, 0, high, source)
             for key, high in (("image_size", MAX_IMAGE_SIZE), ("in_channels", MAX_IN_CHANNELS),
                               ("max_length", MAX_TOKENS))}
    if spec.modality == "text" and isinstance(cfg.get("options"), dict) and "bert" in cfg["options"]:
        return ModelConfig(arch=cfg["arch"], num_classes=num_classes, modality="text")
    return spec.make_config(num_classes, sizes["image_size"] or None, sizes["in_channels"] or None,
                            sizes["max_length"] or None)


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape as the header of the safetensors file ``path`` declares it; nothing
    else of the file is read. A non-regular or unreadable file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    path = regular_file(path, "safetensors weights file", error=CheckpointError)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err}).") from None


def shape_mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """What differs between the tensor names and shapes a model ``expected`` and those ``found``
    in a weights file, as one phrase ("" when they match)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {tuple(found[k])} vs model {tuple(v)}" for k, v in expected.items()
             if k in found and tuple(found[k]) != tuple(v)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        parts.append(f"{len(wrong)} of the wrong shape (e.g. {'; '.join(wrong[:3])})")
    return ", ".join(parts)


def load_model(path: str | Path, config: str | Path | None = None) -> TransferModel:
    """Load a model saved by :func:`save_model`, or a user's weights file plus ``config`` JSON.

    Every tensor must be present with the right shape; a mismatch is reported by name. The
    config is checked against sane bounds, then against the weights' shapes on a model built
    on the ``meta`` device (no memory), before the real model is allocated: a config.json
    that asks for more than its weights hold never allocates it.
    """
    from safetransfer.models.text import load_tokenizer
    from safetransfer.models.zoo import build_from_config

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


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a clear :class:`CheckpointError` on any mismatch."""
    problems = shape_mismatches({k: tuple(v.shape) for k, v in model.state_dict().items()},
                                {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise CheckpointError(
            f"Weights in {source} do not match the model ({model.config.arch if hasattr(model, 'config') else type(model).__name__}): "
            + problems + ". Check the config (arch, num_classes, image size) that goes with these weights."
        )
    model.load_state_dict(state, strict=True)

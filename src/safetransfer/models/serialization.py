"""Reading and writing tensors safely, below the model zoo: safetensors files with a JSON record
beside them, PyTorch checkpoints read with ``torch.load(weights_only=True)`` only after their
pickle structure is checked, and shape checks that name what differs.

Nothing here builds a model; :mod:`safetransfer.models.io` saves and loads whole models on top.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from safetransfer.errors import CheckpointError
from safetransfer.files import atomic_write_text
from safetransfer.pickle_analysis import checkpoint_structure
from safetransfer.safe_paths import MAX_CONFIG_BYTES, read_text_bounded, regular_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def save_tensors_and_json(folder: str | Path, tensors: dict[str, torch.Tensor], tensors_name: str,
                          doc: dict[str, Any], json_name: str) -> Path:
    """Write ``tensors`` (safetensors) and ``doc`` (JSON) into ``folder``, each atomically."""
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


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape as the header of the safetensors file ``path`` declares it; nothing
    else of the file is read. A non-regular or unreadable file raises :class:`CheckpointError`."""
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

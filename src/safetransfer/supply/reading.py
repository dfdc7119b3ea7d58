"""Reading the tensors of a model file or folder for the supply-chain tools, never unpickling code.

Accepted sources:

- a ``.safetensors`` file (read with :mod:`safetensors`, no code at all);
- a PyTorch checkpoint (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.pkl``, or any file whose
  content is a zip checkpoint or a pickle): read with ``torch.load(weights_only=True)`` only,
  so a pickle that needs code is refused (:class:`~safetransfer.errors.CheckpointError` saying
  how to convert it). Nested dictionaries (``{"state_dict": {...}}``, ``{"model": {...},
  "optimizer": {...}}``) are flattened with dotted names; non-tensor entries are counted and
  skipped;
- a folder (a Hugging Face model folder, a safetransfer model folder, a sharded checkpoint):
  every file is hashed; the tensors come from its ``*.safetensors`` files, or when it has none
  from its PyTorch checkpoint files (a folder holding both formats of the same weights is
  read once, from the safetensors).

Every problem (missing, empty, truncated, corrupt, unknown format, the same tensor name in
two shards) is a :class:`~safetransfer.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safetransfer.errors import CheckpointError
from safetransfer.models.serialization import PICKLE_SUFFIXES, safe_torch_load
from safetransfer.safe_paths import outside_folder, regular_file
from safetransfer.supply.formats import sniff

SAFETENSORS_SUFFIX = ".safetensors"


def sniff_format(path: Path) -> str:
    """``"safetensors"``, ``"pytorch"`` (a zip checkpoint or a pickle) or ``"unknown"``, by content, never by name.

    Raises :class:`CheckpointError` for a missing, empty or non-regular file (a FIFO is never opened).
    """
    path = Path(path)
    size = regular_file(path, "weights file", error=CheckpointError).stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a weights file.")
    with path.open("rb") as f:
        kind = sniff(f.read(512), size)
    if kind == "safetensors":
        return "safetensors"
    if kind in ("zip", "pickle"):
        return "pytorch"
    if path.suffix == SAFETENSORS_SUFFIX:  # content unknown: the safetensors reader says what is wrong
        return "safetensors"
    if path.suffix in PICKLE_SUFFIXES:
        return "pytorch"
    return "unknown"


@dataclass
class WeightSource:
    """What a path holds: its files (relative names) and its tensors, read safely.

    ``skipped`` names the entries of a folder that were not read: symlinks that point outside
    the folder (never followed, so a manifest cannot record a file elsewhere on the system),
    broken links, FIFOs and devices.
    """

    root: Path
    files: list[Path]
    weight_files: list[Path]
    skipped_entries: int = 0
    tensor_file: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def relative(self, path: Path) -> str:
        return path.name if self.root.is_file() else path.relative_to(self.root).as_posix()


def weight_source(path: str | Path) -> WeightSource:
    """List what ``path`` (a file or a folder) holds; nothing is read beyond the file heads yet."""
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"No such file or folder: {root}")
    if not root.is_dir():
        kind = sniff_format(root)
        if kind == "unknown":
            raise CheckpointError(
                f"{root}: unknown weights format (not safetensors, not a PyTorch checkpoint). "
                f"Supported: .safetensors, .pt/.pth/.bin/.ckpt, or a model folder."
            )
        return WeightSource(root, [root], [root])
    files, skipped = folder_files(root)
    if not files:
        raise CheckpointError(f"{root} is an empty folder: no model files in it.")
    safetensors_files = [p for p in files if p.suffix == SAFETENSORS_SUFFIX]
    pickle_files = [p for p in files if p.suffix in PICKLE_SUFFIXES and "optimizer" not in p.name]
    weight_files = safetensors_files or pickle_files
    if not weight_files:
        raise CheckpointError(
            f"{root} holds no weights file (.safetensors, .pt, .pth, .bin, .ckpt); files: "
            f"{', '.join(p.name for p in files[:8])}{' ...' if len(files) > 8 else ''}."
        )
    return WeightSource(root, files, weight_files, skipped=skipped)


def folder_files(root: Path) -> tuple[list[Path], dict[str, str]]:
    """The regular files of ``root`` (recursively, hidden entries left out) and ``{entry: why}`` of
    those not read: symlinks out of the folder or looping, symlinked folders (never entered, so no
    cycle), FIFOs and devices (see :func:`~safetransfer.safe_paths.outside_folder`)."""
    files: list[Path] = []
    skipped: dict[str, str] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            if (here / d).is_symlink():
                why = outside_folder(here / d, root) or ""
                skipped[(here / d).relative_to(root).as_posix()] = (
                    why if "outside the folder" in why or "symlink" in why else "a symlinked folder, not followed")
        for name in sorted(n for n in names if not n.startswith(".")):
            entry = here / name
            why = outside_folder(entry, root)
            if why is None:
                files.append(entry)
            else:
                skipped[entry.relative_to(root).as_posix()] = why
    return sorted(files), skipped


def iter_tensors(source: WeightSource) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of the source's weight files, file by file (CPU tensors).

    Safetensors files are read one tensor at a time, so memory holds one tensor (plus one
    checkpoint for PyTorch files). ``source.tensor_file`` records which file each name came
    from; a name in two files is an error.
    """
    for path in source.weight_files:
        for name, tensor in _tensors_of_file(path, source):
            if name in source.tensor_file:
                raise CheckpointError(
                    f"tensor '{name}' is in both {source.tensor_file[name]} and {source.relative(path)}: "
                    f"an ambiguous model folder (point at one file)."
                )
            source.tensor_file[name] = source.relative(path)
            yield name, tensor


def read_tensors(path: str | Path) -> tuple[WeightSource, dict[str, torch.Tensor]]:
    """All tensors of ``path`` at once (for diffs): the source and ``{name: tensor}``."""
    source = weight_source(path)
    return source, dict(iter_tensors(source))


def _tensors_of_file(path: Path, source: WeightSource) -> Iterator[tuple[str, torch.Tensor]]:
    kind = sniff_format(path)
    if kind == "safetensors":
        yield from _safetensors_tensors(path)
        return
    if kind == "pytorch":
        obj = safe_torch_load(path)
        tensors, skipped = flatten_tensors(obj)
        source.skipped_entries += skipped
        if not tensors:
            raise CheckpointError(f"{path} holds no tensors (a {type(obj).__name__}); not a weights file.")
        yield from tensors.items()
        return
    raise CheckpointError(f"{path}: unknown weights format.")


def _safetensors_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = list(f.keys())
            for name in names:
                yield name, f.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file (corrupt or truncated: {err}).") from None


def flatten_tensors(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], int]:
    """The tensors of a (nested) checkpoint object under dotted names, and how many non-tensor leaves were skipped.

    A top-level ``{"state_dict": {...}}`` or ``{"model": {...}}`` whose other entries hold no
    tensors is unwrapped, so a training checkpoint's model weights keep their own names.
    """
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict) and not prefix:
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            others = {k: v for k, v in obj.items() if k != key}
            if isinstance(inner, dict) and not any(_holds_tensor(v) for v in others.values()):
                return out, _flatten_into(inner, "", out) + _flatten_into(others, "", {})
    return out, _flatten_into(obj, prefix, out)


def _flatten_into(value: Any, name: str, out: dict[str, torch.Tensor]) -> int:
    """Add ``value``'s tensors to ``out`` in their order; return the non-tensor leaves skipped."""
    if isinstance(value, torch.Tensor):
        out[name] = value
        return 0
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return 1
    return sum(_flatten_into(v, f"{name}.{k}" if name else k, out) for k, v in items)


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    return False

"""Writing files atomically: through a temporary sibling and ``os.replace``, so a reader never sees
half a file and a killed run leaves the previous version whole. A leaf under every layer that writes
results (imports only :mod:`safetransfer.safe_paths` and torch)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from safetransfer.safe_paths import output_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (no half files).

    A ``path`` that is a folder (or under a file) raises :class:`~safetransfer.errors.ConfigError`."""
    path = output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace`` (a folder as ``path``: ConfigError)."""
    path = output_file(path, "checkpoint file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

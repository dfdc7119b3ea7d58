"""Fingerprints of model weights: a JSON manifest of file hashes and per-tensor hashes.

"Verify the weights you reuse as you verify the checksums of what you download." A manifest
lists each file (SHA-256 of its bytes) and each tensor (name, shape, dtype, SHA-256 of its
values). The tensor hash covers the dtype, the shape and the raw little-endian element bytes
in C order, and nothing of the container: the same weights saved as safetensors and as a
PyTorch state dict give the same tensor hashes (their file hashes differ).

Nothing outside a model folder is read: a symlink inside it whose target lies outside (or that
loops, or dangles) and a FIFO, device or socket are neither hashed nor loaded; the manifest
lists them under ``skipped`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safetransfer.errors import CheckpointError
from safetransfer.files import atomic_write_text
from safetransfer.safe_paths import (
    MAX_DOCUMENT_BYTES,
    read_json_bounded,
)
from safetransfer.supply.reading import iter_tensors, weight_source

MANIFEST_FORMAT = "safetransfer-manifest/1"
CHUNK_BYTES = 1 << 20


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of ``dtype|shape|`` and the tensor's element bytes (C order, little-endian, CPU)."""
    t = tensor.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
    if t.numel():
        raw = t.reshape(-1).view(torch.uint8).numpy()
        if sys.byteorder != "little" and t.element_size() > 1:
            raw = raw.reshape(-1, t.element_size())[:, ::-1].copy()
        h.update(memoryview(raw))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TensorRecord:
    """One tensor of a manifest."""

    shape: list[int]
    dtype: str
    sha256: str
    file: str

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class Manifest:
    """Files and tensors of a model path, with their hashes (see the module doc)."""

    path: str
    files: dict[str, dict[str, Any]]
    tensors: dict[str, TensorRecord]
    skipped_entries: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    skipped: dict[str, str] = field(default_factory=dict)  # entries not read (a symlink out, a FIFO): why

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "path": self.path,
            "created": self.created,
            "files": self.files,
            "tensors": {k: {"shape": v.shape, "dtype": v.dtype, "sha256": v.sha256, "file": v.file}
                        for k, v in self.tensors.items()},
            "totals": {"files": len(self.files), "tensors": len(self.tensors),
                       "elements": sum(v.numel for v in self.tensors.values()),
                       "skipped_non_tensor_entries": self.skipped_entries},
            "skipped": dict(self.skipped),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, doc: Any, source: str = "manifest") -> "Manifest":
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise CheckpointError(f"{source} is not a safetransfer manifest (needs \"format\": \"{MANIFEST_FORMAT}\").")
        try:
            tensors = {str(k): TensorRecord([int(s) for s in v["shape"]], str(v["dtype"]), str(v["sha256"]),
                                            str(v.get("file", "")))
                       for k, v in doc["tensors"].items()}
            files = {str(k): dict(v) for k, v in doc.get("files", {}).items()}
            skipped = {str(k): str(v) for k, v in doc.get("skipped", {}).items()}
            return cls(str(doc.get("path", "")), files, tensors,
                       int(doc.get("totals", {}).get("skipped_non_tensor_entries", 0)), str(doc.get("created", "")),
                       skipped)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{source}: malformed manifest ({type(err).__name__}: {err}).") from None

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """The manifest in the JSON file ``path``: a regular file (a FIFO or a folder is refused
        unopened) of at most :data:`~safetransfer.safe_paths.MAX_DOCUMENT_BYTES`."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"No such manifest: {path}")
        doc = read_json_bounded(path, "manifest", MAX_DOCUMENT_BYTES, CheckpointError)
        return cls.from_dict(doc, str(path))


def fingerprint(path: str | Path, progress: bool = False) -> Manifest:
    """The :class:`Manifest` of a weights file or model folder (see :mod:`safetransfer.supply.reading`).

    Entries of a folder that lead outside it or would hang the reading are not read; the
    manifest's ``skipped`` names them (see :func:`~safetransfer.supply.reading.folder_files`).
    """
    source = weight_source(path)
    skipped = dict(source.skipped)
    files = {source.relative(p): {"bytes": p.stat().st_size, "sha256": file_digest(p)} for p in source.files}
    tensors: dict[str, TensorRecord] = {}
    iterator = iter_tensors(source)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="fingerprint", unit="tensor", leave=False)
    for name, tensor in iterator:
        tensors[name] = TensorRecord(list(tensor.shape), str(tensor.dtype).removeprefix("torch."),
                                     tensor_digest(tensor), source.tensor_file[name])
    return Manifest(str(Path(path)), files, tensors, source.skipped_entries, skipped=skipped)

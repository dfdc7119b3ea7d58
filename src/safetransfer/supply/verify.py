"""Verify model weights against a manifest: pass or fail per tensor, and what differs.

Tensors are compared by their content hashes (see :func:`safetransfer.supply.fingerprint.tensor_digest`),
so a model re-saved in another container format still passes; files are compared by their
byte hashes and reported beside (``strict_files`` makes a file difference fail too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetransfer.supply.fingerprint import Manifest, fingerprint

# statuses of a tensor or a file, best first
OK, CHANGED, SHAPE, DTYPE, MISSING, EXTRA = "ok", "changed", "shape differs", "dtype differs", "missing", "unexpected"
SKIPPED = "not read"  # a file of the folder that leads outside it (a symlink) or would hang (a FIFO)


@dataclass
class ItemCheck:
    """One tensor's (or file's) verdict: ``status`` and, when it fails, ``detail`` (expected vs found)."""

    name: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class VerifyReport:
    """Per-tensor and per-file checks of ``path`` against ``manifest_path``."""

    path: str
    manifest_path: str
    tensors: list[ItemCheck]
    files: list[ItemCheck]
    strict_files: bool = False

    @property
    def failed_tensors(self) -> list[ItemCheck]:
        return [c for c in self.tensors if not c.ok]

    @property
    def failed_files(self) -> list[ItemCheck]:
        return [c for c in self.files if not c.ok]

    @property
    def passed(self) -> bool:
        return not self.failed_tensors and not (self.strict_files and self.failed_files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "manifest": self.manifest_path, "passed": self.passed,
            "strict_files": self.strict_files,
            "tensors_checked": len(self.tensors), "tensors_failed": len(self.failed_tensors),
            "files_checked": len(self.files), "files_failed": len(self.failed_files),
            "tensors": [vars(c) for c in self.tensors], "files": [vars(c) for c in self.files],
        }


def compare_manifests(found: Manifest, expected: Manifest) -> tuple[list[ItemCheck], list[ItemCheck]]:
    """Tensor checks and file checks of ``found`` against ``expected`` (expected order, then extras)."""
    tensors: list[ItemCheck] = []
    for name, want in expected.tensors.items():
        got = found.tensors.get(name)
        if got is None:
            tensors.append(ItemCheck(name, MISSING, f"expected {want.dtype} {want.shape}"))
        elif got.shape != want.shape:
            tensors.append(ItemCheck(name, SHAPE, f"expected {want.shape}, found {got.shape}"))
        elif got.dtype != want.dtype:
            tensors.append(ItemCheck(name, DTYPE, f"expected {want.dtype}, found {got.dtype}"))
        elif got.sha256 != want.sha256:
            tensors.append(ItemCheck(name, CHANGED, f"values differ (sha256 {want.sha256[:12]}… -> {got.sha256[:12]}…)"))
        else:
            tensors.append(ItemCheck(name, OK))
    tensors += [ItemCheck(name, EXTRA, f"{got.dtype} {got.shape} not in the manifest")
                for name, got in found.tensors.items() if name not in expected.tensors]
    files: list[ItemCheck] = []
    for name, want in expected.files.items():
        got_file = found.files.get(name)
        if got_file is None and name in found.skipped:
            files.append(ItemCheck(name, SKIPPED, found.skipped[name]))
        elif got_file is None:
            files.append(ItemCheck(name, MISSING))
        elif got_file.get("sha256") != want.get("sha256"):
            files.append(ItemCheck(name, CHANGED, f"{want.get('bytes')} -> {got_file.get('bytes')} bytes"))
        else:
            files.append(ItemCheck(name, OK))
    files += [ItemCheck(name, EXTRA) for name in found.files if name not in expected.files]
    files += [ItemCheck(name, SKIPPED, why) for name, why in found.skipped.items()
              if name not in expected.files and expected.skipped.get(name) != why]
    return tensors, files


def verify(path: str | Path, manifest: str | Path | Manifest, strict_files: bool = False,
           progress: bool = False) -> VerifyReport:
    """Fingerprint ``path`` and compare it with ``manifest`` (a :class:`Manifest` or its JSON file)."""
    expected = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    found = fingerprint(path, progress=progress)
    tensors, files = compare_manifests(found, expected)
    where = str(manifest) if not isinstance(manifest, Manifest) else expected.path
    return VerifyReport(str(path), where, tensors, files, strict_files)

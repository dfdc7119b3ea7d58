"""Scan model files for pickled code, without ever unpickling them.

A PyTorch ``.pt``/``.pth``/``.bin``/``.ckpt`` file (a zip of pickles, or an old-style raw
pickle), a ``.pkl`` or a ``.npy``/``.npz`` with object arrays can make ``pickle.load`` import
and call any function: ``os.system``, ``builtins.exec``, ``subprocess.Popen``. This module
lists every global such a file would import and flags the dangerous ones.

The opcode scanning is done by `picklescan <https://pypi.org/project/picklescan/>`_ (the
scanner the Hugging Face Hub runs on uploaded pickles): it disassembles the pickle stream
with :mod:`pickletools` (no code runs), walks zip checkpoints, and keeps maintained
allow and deny lists of globals. We chose it over ``modelscan`` (heavier, with optional
TensorFlow/H5 dependencies, and it runs picklescan-style scanning anyway) and ``fickling`` (a
decompiler whose safety verdicts are heuristic). Each global gets one of picklescan's levels:

- ``dangerous``: on the deny list (``os.*``, ``subprocess.*``, ``builtins.eval/exec/getattr``,
  ``runpy``, ``webbrowser`` ...), or a name the disassembler could not resolve;
- ``suspicious``: on neither list (an unknown class: code you would have to trust);
- ``innocuous``: on the allow list (``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict`` ...).

Safetensors files hold no code by construction and are reported as such; other files
(JSON configs, vocabularies) are listed as not pickles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetransfer.errors import AssetMissingError, CheckpointError
from safetransfer.supply.reading import PICKLE_PROTOCOL_OPCODE, SAFETENSORS_SUFFIX, ZIP_MAGIC

PICKLE_LIKE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".dat", ".data",
                        ".npy", ".npz", ".zip", ".7z", ".mar", ".pt2")


@dataclass
class GlobalImport:
    """A global the pickle would import: ``module.name`` and its safety level."""

    module: str
    name: str
    safety: str

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class FileScan:
    """One file's scan: its kind, the globals its pickles import, and any parse error."""

    path: str
    kind: str                   # "pickle", "safetensors", "not a pickle", "empty"
    globals: list[GlobalImport] = field(default_factory=list)
    error: str | None = None

    @property
    def dangerous(self) -> list[GlobalImport]:
        return [g for g in self.globals if g.safety == "dangerous"]

    @property
    def suspicious(self) -> list[GlobalImport]:
        return [g for g in self.globals if g.safety == "suspicious"]

    @property
    def verdict(self) -> str:
        if self.dangerous:
            return "DANGEROUS"
        if self.error:
            return "unreadable"
        if self.suspicious:
            return "suspicious"
        return "clean" if self.kind in ("pickle", "safetensors") else "skipped"


@dataclass
class ScanReport:
    """The scan of a file or folder (see the module doc)."""

    path: str
    files: list[FileScan]
    scanner: str

    @property
    def infected(self) -> list[FileScan]:
        return [f for f in self.files if f.dangerous]

    @property
    def flagged(self) -> bool:
        """True when a file imports a dangerous global or a pickle could not be parsed to the end."""
        return any(f.dangerous or (f.error and f.kind == "pickle") for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "scanner": self.scanner, "flagged": self.flagged,
            "files_scanned": len(self.files), "files_dangerous": len(self.infected),
            "files": [{"path": f.path, "kind": f.kind, "verdict": f.verdict, "error": f.error,
                       "globals": [vars(g) for g in f.globals]} for f in self.files],
        }


def _picklescan():
    try:
        import picklescan
        from picklescan import scanner
    except ImportError as err:
        raise AssetMissingError("The pickle scanner is not installed: `pip install picklescan`.") from err
    return scanner, getattr(picklescan, "__version__", None)


def _kind(path: Path) -> str:
    if path.stat().st_size == 0:
        return "empty"
    if path.suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    if path.suffix.lower() in PICKLE_LIKE_SUFFIXES:
        return "pickle"
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(ZIP_MAGIC) or head[:1] == bytes([PICKLE_PROTOCOL_OPCODE]):
        return "pickle"
    return "not a pickle"


def scan_file(path: str | Path, strict: bool = False) -> FileScan:
    """Scan one file (see the module doc); ``strict`` counts unknown globals as dangerous."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No such file: {path}")
    kind = _kind(path)
    result = FileScan(str(path), kind)
    if kind != "pickle":
        if kind == "empty":
            result.error = "empty file (0 bytes)"
        return result
    scanner, _ = _picklescan()
    log = logging.getLogger("picklescan")
    level = log.level
    log.setLevel(logging.CRITICAL)  # picklescan logs each finding; the report lists them
    try:
        with path.open("rb") as f:
            # picklescan picks zip / 7z / raw pickle by content, the suffix only for PyTorch's old format
            suffix = path.suffix if path.suffix in (".pt", ".pth", ".bin", ".ckpt") else None
            sr = scanner.scan_bytes(f, str(path), suffix, strict=strict)
    except Exception as err:  # a corrupt zip or stream: reported, never raised
        result.error = f"could not be parsed ({type(err).__name__}: {str(err)[:160]})"
        return result
    finally:
        log.setLevel(level)
    seen: set[tuple[str, str]] = set()
    for g in sorted(sr.globals, key=lambda g: (g.module, g.name)):
        if (g.module, g.name) not in seen:
            seen.add((g.module, g.name))
            result.globals.append(GlobalImport(g.module, g.name, g.safety.value))
    if sr.scan_err or not _zip_or_complete_pickle(path):
        result.error = "the pickle stream could not be parsed to the end (corrupt, truncated, or crafted to hide globals)"
    return result


def _zip_or_complete_pickle(path: Path) -> bool:
    """False for a raw pickle file whose opcode stream does not reach STOP (a truncated file).

    Zip checkpoints are checked by picklescan itself (a broken archive raises there)."""
    import pickletools

    with path.open("rb") as f:
        if f.read(4).startswith(ZIP_MAGIC):
            return True
        f.seek(0)
        try:
            last = None
            for last, _, _ in pickletools.genops(f):
                if last.name == "STOP":
                    return True
        except (ValueError, EOFError, UnicodeDecodeError):
            return False
    return False


def scan(path: str | Path, strict: bool = False) -> ScanReport:
    """Scan a file, or every file of a folder (recursively), for pickled code; nothing is loaded."""
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"No such file or folder: {root}")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise CheckpointError(f"{root} is an empty folder: nothing to scan.")
    _, version = _picklescan()
    return ScanReport(str(root), [scan_file(p, strict) for p in files], f"picklescan {version or ''}".strip())

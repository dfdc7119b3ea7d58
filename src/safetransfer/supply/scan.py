"""Scan model files for pickled code, without ever unpickling them; fail closed.

Threat model: a checkpoint downloaded from a hub, made by an attacker who knows how scanners
read files (see :mod:`safetransfer.pickle_analysis` for the tricks). ``torch.load(weights_only=
False)`` and ``pickle.load`` run any import and call a pickle names, whatever the file is
called, so this scanner:

- judges every file by its **content** (:func:`~safetransfer.supply.formats.sniff`): zip
  checkpoints (every member, whatever its name, nested zips too), raw and legacy ``torch.save``
  pickles (all five pickles of the legacy stream, each with its own memo, and its storage region
  checked byte for byte against the records), protocol 0/1 pickles with any name, numpy files
  (an object array's pickle), safetensors (header bounded and checked; bytes after the tensors are
  never trusted);
- analyses each pickle at the opcode level with our own symbolic unpickler and an **allow-list**
  (:func:`~safetransfer.pickle_analysis.import_safety`): ``innocuous`` (what weights need),
  ``suspicious`` (a class of a known model library: code you must trust; ``--strict`` makes
  these dangerous), ``dangerous`` (anything else, and any construct the analysis cannot follow);
- never says ``clean`` about what it could not read to the end: a truncated or malformed
  pickle, an archive it does not unpack (7z, gzip, tar), an encrypted or bomb-sized zip member,
  a FIFO or device are ``unreadable``, which flags the scan like ``dangerous``;
- keeps `picklescan <https://pypi.org/project/picklescan/>`_ as a second opinion on the files it
  judged innocuous or suspicious: picklescan's "dangerous" is added, its "clean" never overrides
  ours.

Every size a file declares is bounded (:class:`ScanLimits`, :class:`~safetransfer.pickle_analysis.Limits`)
before anything is allocated.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from safetransfer.errors import CheckpointError
from safetransfer.pickle_analysis import (
    DANGEROUS,
    INNOCUOUS_SAFETY,
    LEGACY_TORCH_MAGIC,
    SUSPICIOUS,
    Limits,
    PickleAnalysis,
    analyze_pickle,
    legacy_storages,
    result_strings,
)
from safetransfer.safe_paths import regular_file
from safetransfer.supply.formats import (
    MAX_ZIP_DIRECTORY,
    FormatError,
    check_safetensors,
    read_npy_header,
    sniff,
    zip_directory_size,
)

CODE_CAPABLE_KINDS = ("pickle", "zip", "numpy", "safetensors")
"""Formats whose verdict can be ``clean``: fully read and judged. Other files are ``skipped`` (named)."""

_TORCH_ZIP_DATA = re.compile(r"^[^/]+/((data|\.data)/\d+|\.data/serialization_id|version|byteorder|\.format_version|"
                             r"\.storage_alignment)$")


@dataclass(frozen=True)
class ScanLimits:
    """Bounds on what a scanned file may make the scanner read (a hostile file sets sizes)."""

    pickle: Limits = Limits()
    max_members: int = 1_000_000
    max_member_bytes: int = 4 << 30        # a pickle or numpy member larger than this is not read
    max_ratio: int = 200                   # uncompressed/compressed, for members above 16 MiB
    max_nesting: int = 3                   # zips inside zips
    max_pickles: int = 64                  # pickles laid back to back in one stream


@dataclass
class GlobalImport:
    """A global a pickle would import: ``module.name``, its safety level and why, and where."""

    module: str
    name: str
    safety: str
    reason: str = ""
    where: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Construct:
    """A pickle construct the scanner cannot follow or that weights never use (``dangerous``)."""

    opcode: str
    detail: str
    where: str


@dataclass
class FileScan:
    """One file's scan: its format (by content), imports, dangerous constructs, and what could not be read."""

    path: str
    kind: str
    globals: list[GlobalImport] = field(default_factory=list)
    constructs: list[Construct] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    @property
    def dangerous(self) -> list[GlobalImport]:
        levels = (DANGEROUS, SUSPICIOUS) if self.strict else (DANGEROUS,)
        return [g for g in self.globals if g.safety in levels]

    @property
    def suspicious(self) -> list[GlobalImport]:
        return [] if self.strict else [g for g in self.globals if g.safety == SUSPICIOUS]

    @property
    def verdict(self) -> str:
        """``dangerous``, ``unreadable``, ``suspicious``, ``clean`` or ``skipped`` (not a code-capable format)."""
        if self.dangerous or self.constructs:
            return "dangerous"
        if self.errors:
            return "unreadable"
        if self.suspicious:
            return "suspicious"
        return "clean" if self.kind in CODE_CAPABLE_KINDS else "skipped"

    @property
    def flagged(self) -> bool:
        return self.verdict in ("dangerous", "unreadable")

    def add(self, analysis: PickleAnalysis, where: str) -> None:
        seen = {(g.module, g.name, g.where) for g in self.globals}
        for imp in analysis.imports:
            if (imp.module, imp.name, where) not in seen:
                seen.add((imp.module, imp.name, where))
                self.globals.append(GlobalImport(imp.module, imp.name, imp.safety, imp.reason, where))
        for c in analysis.constructs:
            self.constructs.append(Construct(c.opcode, c.detail, f"{where} byte {c.offset}"))
        if not analysis.complete:
            self.errors.append(f"{where}: the pickle could not be parsed to the end ({analysis.error}); "
                               f"a loader would run what comes before that point")


@dataclass
class ScanReport:
    """The scan of a file or folder (see the module doc)."""

    path: str
    files: list[FileScan]
    scanner: str

    @property
    def infected(self) -> list[FileScan]:
        return [f for f in self.files if f.verdict == "dangerous"]

    @property
    def flagged(self) -> bool:
        """True when a file is dangerous or could not be read to the end (never clean by default)."""
        return any(f.flagged for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "scanner": self.scanner, "flagged": self.flagged,
            "files_scanned": len(self.files), "files_dangerous": len(self.infected),
            "files_unreadable": sum(f.verdict == "unreadable" for f in self.files),
            "kinds": {k: sum(f.kind == k for f in self.files) for k in sorted({f.kind for f in self.files})},
            "files": [{"path": f.path, "kind": f.kind, "verdict": f.verdict, "error": f.error, "notes": f.notes,
                       "globals": [vars(g) for g in f.globals],
                       "constructs": [vars(c) for c in f.constructs]} for f in self.files],
        }


class _Scanner:
    """Scans one file's bytes into a :class:`FileScan` (see the module doc)."""

    def __init__(self, result: FileScan, limits: ScanLimits) -> None:
        self.result, self.limits = result, limits

    def stream(self, f: BinaryIO, size: int, where: str, depth: int = 0) -> str:
        """Judge the bytes of ``f`` (``size`` of them, from 0); returns the format found."""
        f.seek(0)
        head = f.read(512)
        kind = sniff(head, size)
        if kind == "empty":
            self.result.errors.append(f"{where}: empty (0 bytes)")
        elif kind == "zip":
            self.zip(f, size, where, depth)
        elif kind == "safetensors":
            self.safetensors(f, size, where)
        elif kind == "numpy":
            self.numpy(f, size, where)
        elif kind == "pickle":
            self.pickles(f, size, where, signature=True)
        elif kind in ("7z", "gzip", "tar"):
            self.result.errors.append(f"{where}: a {kind} archive, not unpacked by the scanner, so not judged "
                                      f"(unpack it and scan the files)")
        elif self.pickles(f, size, where, signature=False):
            kind = "pickle"
        return kind

    # -- pickles ----------------------------------------------------------------------------
    def pickles(self, f: BinaryIO, end: int, where: str, signature: bool, start: int = 0) -> bool:
        """Every pickle from ``start`` to ``end``; a legacy torch stream's storage region checked.

        Without a pickle signature (protocol 0/1, or any other bytes), the bytes are judged as
        pickles only if one of them makes a call or a construct an unpickler would run (even if
        the stream breaks off after it), or if they parse, pickle after pickle, exactly to their
        end; otherwise they are not a pickle and nothing is recorded. Returns whether they were judged.
        """
        f.seek(start)
        first = analyze_pickle(f, self.limits.pickle)
        if signature and first.complete and type(first.result) is int and first.result == LEGACY_TORCH_MAGIC:
            self.result.add(first, f"{where} pickle 1")
            self.legacy_torch(f, end, where, first)
            return True
        analyses = [first]
        while analyses[-1].complete and analyses[-1].end < end and len(analyses) < self.limits.max_pickles:
            analyses.append(analyze_pickle(f, self.limits.pickle))
        last = analyses[-1]
        runs_code = any(a.calls or a.constructs for a in analyses)
        if not (signature or runs_code or (last.complete and last.end >= end)):
            return False
        for index, analysis in enumerate(analyses, 1):
            trailing_junk = index > 1 and not analysis.complete and analysis.opcodes <= 1 and not analysis.imports
            if trailing_junk:
                self.result.errors.append(f"{where}: {end - analysis.start:,} bytes after the pickle that are not a "
                                          f"pickle (data hidden after what a loader reads)")
                continue
            single = len(analyses) == 1 and analysis.complete and analysis.end >= end
            self.result.add(analysis, where if single else f"{where} pickle {index}")
        if last.complete and last.end < end:
            self.result.errors.append(f"{where}: more than {self.limits.max_pickles} pickles back to back: not all read")
        return True

    def legacy_torch(self, f: BinaryIO, end: int, where: str, first: PickleAnalysis) -> None:
        """A legacy ``torch.save`` stream: magic, protocol, sys info, object, storage keys, then raw storages."""
        analyses = [first]
        for index in range(2, 6):
            analysis = analyze_pickle(f, self.limits.pickle)
            self.result.add(analysis, f"{where} pickle {index}")
            if not analysis.complete:
                return
            analyses.append(analysis)
        storages, keys = legacy_storages(analyses[3]), result_strings(analyses[4])
        if storages is None or keys is None or set(keys) != set(storages):
            self.result.errors.append(f"{where}: a legacy torch file whose storage records cannot be matched "
                                      f"(persistent ids or key list crafted or unknown)")
            return
        position = analyses[4].end
        for key in keys:
            numel, element = storages[key]
            f.seek(position)
            declared = f.read(8)
            if len(declared) != 8 or int.from_bytes(declared, "little") != numel:
                self.result.errors.append(f"{where}: storage '{key}' at byte {position:,} does not match its record")
                return
            position += 8 + numel * element
            if position > end:
                self.result.errors.append(f"{where}: truncated in storage '{key}'")
                return
        if position != end:
            self.result.errors.append(f"{where}: {end - position:,} bytes after the last storage of a legacy torch "
                                      f"file (hidden data)")
            self.pickles(f, end, f"{where} after the storages", signature=False, start=position)
        else:
            self.result.notes.append(f"{where}: legacy torch file, {len(keys)} storage(s) checked")

    # -- containers ---------------------------------------------------------------------------
    def zip(self, f: BinaryIO, size: int, where: str, depth: int) -> None:
        try:
            members, directory = zip_directory_size(f, size)
        except FormatError as err:
            self.result.errors.append(f"{where}: {err}")
            return
        if members > self.limits.max_members or directory > MAX_ZIP_DIRECTORY:
            self.result.errors.append(f"{where}: a zip declaring {members:,} members ({directory:,} directory bytes): "
                                      f"refused as a resource attack")
            return
        try:
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                infos = archive.infolist()
                skipped = 0
                for info in infos:
                    skipped += self.zip_member(archive, info, where, depth)
                if skipped:
                    self.result.notes.append(f"{where}: {skipped} tensor storage member(s) (raw bytes, never unpickled)")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError,
                RuntimeError) as err:
            self.result.errors.append(f"{where}: a broken zip ({type(err).__name__}: {str(err)[:160]})")

    def zip_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, depth: int) -> int:
        name = f"{where}:{info.filename}" if where else info.filename
        if info.is_dir():
            return 0
        if info.flag_bits & 0x1:
            self.result.errors.append(f"{name}: an encrypted member, not judged")
            return 0
        if _TORCH_ZIP_DATA.search(info.filename):
            return 1  # tensor bytes and torch metadata: torch reads them raw, never as pickles
        if info.file_size > self.limits.max_member_bytes or (
                info.compress_type != zipfile.ZIP_STORED and info.file_size > 16 << 20
                and info.file_size > self.limits.max_ratio * max(info.compress_size, 1)):
            self.result.errors.append(f"{name}: declares {info.file_size:,} bytes from {info.compress_size:,} "
                                      f"(a zip bomb or an oversized member): not read")
            return 0
        with archive.open(info) as member:
            head = member.read(512)
        kind = sniff(head, info.file_size)
        if kind == "zip":
            if depth + 1 > self.limits.max_nesting:
                self.result.errors.append(f"{name}: zips nested deeper than {self.limits.max_nesting}: not read")
                return 0
            if info.file_size > 256 << 20:
                self.result.errors.append(f"{name}: a nested zip over 256 MiB: not read")
                return 0
            with archive.open(info) as member:
                data = member.read(info.file_size + 1)
            self.stream(io.BytesIO(data), len(data), name, depth + 1)
            return 0
        with archive.open(info) as member:
            self.stream(member, info.file_size, name, depth)
        return 0

    def safetensors(self, f: BinaryIO, size: int, where: str) -> None:
        try:
            layout = check_safetensors(f, size)
        except FormatError as err:
            self.result.errors.append(f"{where}: not a valid safetensors file ({err})")
            return
        if layout.trailing:
            self.result.errors.append(f"{where}: {layout.trailing:,} bytes after the safetensors data (hidden data; "
                                      f"a real safetensors file ends where its header says)")
            self.pickles(f, size, f"{where} after the tensors", signature=False, start=layout.data_end)
        else:
            self.result.notes.append(f"{where}: safetensors, {layout.tensors} tensor(s), no code by construction")

    def numpy(self, f: BinaryIO, size: int, where: str) -> None:
        f.seek(0)
        try:
            header = read_npy_header(f)
        except (FormatError, OSError) as err:
            self.result.errors.append(f"{where}: {err}")
            return
        if header.has_objects:
            self.result.notes.append(f"{where}: an object array: its data is a pickle (np.load(allow_pickle=True) runs it)")
            self.pickles(f, size, where, signature=True, start=header.header_end)
            return
        expected = header.header_end + (header.data_bytes or 0)
        if expected != size:
            self.result.errors.append(f"{where}: shape {header.shape} needs {expected:,} bytes, the file has {size:,} "
                                      f"({'truncated' if expected > size else 'hidden data after the array'})")


def _picklescan_opinion(path: Path, result: FileScan) -> None:
    """picklescan's dangerous globals on ``path``, added to ``result`` (its clean never overrides ours)."""
    try:
        from picklescan import (
            scanner,  # a dependency; optional here so a broken install cannot stop the scan
        )
    except ImportError:
        return
    log = logging.getLogger("picklescan")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with path.open("rb") as f:
            suffix = path.suffix if path.suffix in (".pt", ".pth", ".bin", ".ckpt") else None
            found = scanner.scan_bytes(f, str(path), suffix)
    except Exception as err:  # its own parsing failures are not ours to report as verdicts
        result.notes.append(f"picklescan could not read it ({type(err).__name__})")
        return
    finally:
        log.setLevel(level)
    ours = {(g.module, g.name) for g in result.globals}
    for g in found.globals:
        if g.safety.value == "dangerous" and (g.module, g.name) not in ours:
            result.globals.append(GlobalImport(g.module, g.name, DANGEROUS, "picklescan's deny-list", "picklescan"))


def scan_file(path: str | Path, strict: bool = False, limits: ScanLimits = ScanLimits(),
              second_opinion: bool = True) -> FileScan:
    """Scan one file (see the module doc); ``strict`` counts ``suspicious`` imports as dangerous.

    Raises :class:`CheckpointError` for a missing path or one that is not a regular file.
    """
    path = Path(path)
    size = regular_file(path, "file", error=CheckpointError).stat().st_size
    result = FileScan(str(path), "unknown", strict=strict)
    with path.open("rb") as f:
        result.kind = _Scanner(result, limits).stream(f, size, "")
    if path.suffix.lower() == ".safetensors" and result.kind != "safetensors":
        result.notes.append(f"named .safetensors but its content is {result.kind}: judged by its content")
    _tidy_locations(result)
    if second_opinion and result.kind in ("pickle", "zip") and result.verdict in ("clean", "suspicious"):
        _picklescan_opinion(path, result)
    return result


def _tidy_locations(result: FileScan) -> None:
    """Locations relative to the file: the top level has no name of its own."""
    for g in result.globals:
        g.where = g.where.strip() or "the file"
    for c in result.constructs:
        c.where = c.where.strip()
    result.errors = [e[1:].strip() if e.startswith(":") else e.strip() for e in result.errors]
    result.notes = [n[1:].strip() if n.startswith(":") else n.strip() for n in result.notes]


def _walk(root: Path) -> tuple[list[Path], list[FileScan]]:
    """The regular files under ``root`` (symlinked files followed, as a loader would) and a scan result
    for every entry that is not one: FIFOs, devices, symlinked folders (never followed), broken links."""
    files: list[Path] = []
    odd: list[FileScan] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for d in list(dirs):
            p = Path(folder, d)
            if p.is_symlink():
                odd.append(FileScan(str(p), "symlinked folder", errors=[f"a symlink to the folder {os.path.realpath(p)}: "
                                                                       f"not followed, so not judged"]))
        for n in sorted(names):
            p = Path(folder, n)
            try:
                regular_file(p, "file", error=CheckpointError)
            except CheckpointError as err:
                odd.append(FileScan(str(p), "not a regular file", errors=[f"{err}: not opened, so not judged"]))
                continue
            files.append(p)
    return sorted(files), odd


def scan(path: str | Path, strict: bool = False, limits: ScanLimits = ScanLimits()) -> ScanReport:
    """Scan a file, or every file of a folder (recursively), for pickled code; nothing is loaded."""
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise CheckpointError(f"No such file or folder: {root}")
    if root.is_dir():
        files, odd = _walk(root)
        if not files and not odd:
            raise CheckpointError(f"{root} is an empty folder: nothing to scan.")
        scans = [scan_file(p, strict, limits) for p in files] + odd
        for s in scans:
            p = Path(s.path)
            if p.is_symlink() and not p.is_dir():
                s.notes.append(f"a symlink to {os.path.realpath(p)} (judged by its target's content)")
        scans.sort(key=lambda s: s.path)
    else:
        scans = [scan_file(root, strict, limits)]
    return ScanReport(str(root), scans, f"safetransfer opcode analysis (allow-list){_picklescan_version()}")


def _picklescan_version() -> str:
    try:
        import picklescan
    except ImportError:
        return ""
    return f" + picklescan {getattr(picklescan, '__version__', '')} second opinion".rstrip()


__all__ = ["INNOCUOUS_SAFETY", "FileScan", "GlobalImport", "ScanLimits", "ScanReport", "scan", "scan_file"]

"""What a file is, judged by its bytes, never by its name: a leaf of the supply chain tools.

Threat model: an attacker names a pickle ``model.safetensors``, appends one to a real
safetensors file, or declares sizes meant to exhaust memory. Every reader here checks a
declared size against the bytes actually present before it allocates anything.

- :func:`sniff` names the format from the first bytes (zip, safetensors, numpy, pickle, 7z,
  gzip, tar, text, other binary);
- :func:`check_safetensors` reads a safetensors header (bounded) and checks that the tensors
  tile the data region exactly and that the file ends where the header says;
- :func:`read_npy_header` reads a ``.npy`` header (bounded, ``ast.literal_eval``, never pickle)
  and says whether the array holds Python objects (a pickle follows) and how many bytes of data
  it should have;
- :func:`zip_directory_size` reads a zip's end-of-central-directory record, so a zip declaring
  millions of members is refused before :mod:`zipfile` lists them.
"""

from __future__ import annotations

import ast
import json
import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
NPY_MAGIC = b"\x93NUMPY"
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
GZIP_MAGIC = b"\x1f\x8b"
PICKLE_PROTO = 0x80

MAX_SAFETENSORS_HEADER = 16 << 20   # bytes; real headers of the largest public models are a few MB
MAX_NPY_HEADER = 1 << 20
MAX_ZIP_DIRECTORY = 64 << 20        # bytes of central directory (about a million members)

SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}


class FormatError(Exception):
    """The file's structure is not what its format requires (the message says what)."""


def sniff(head: bytes, size: int) -> str:
    """The format the first bytes say (``head``: at least the first 16 bytes where the file has them)."""
    if size == 0:
        return "empty"
    if head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
        return "zip"
    if head.startswith(NPY_MAGIC):
        return "numpy"
    if head.startswith(SEVEN_ZIP_MAGIC):
        return "7z"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if len(head) >= 9 and head[8:9] == b"{":
        declared = int.from_bytes(head[:8], "little")
        if 2 <= declared <= size - 8:
            return "safetensors"
    if len(head) >= 2 and head[0] == PICKLE_PROTO and head[1] <= 5:
        return "pickle"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if _looks_like_text(head):
        return "text"
    return "binary"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # a multi-byte character cut at the end of the head is fine
            return False
    return b"\x00" not in head


@dataclass(frozen=True)
class SafetensorsLayout:
    """A safetensors file's checked layout: ``tensors`` entries, where the data ends, the file size."""

    tensors: int
    data_start: int
    data_end: int
    file_size: int

    @property
    def trailing(self) -> int:
        return self.file_size - self.data_end


def check_safetensors(f: BinaryIO, size: int) -> SafetensorsLayout:
    """Check a safetensors file's header and layout; raises :class:`FormatError` on any inconsistency.

    The tensors must tile ``[0, data length)`` exactly (no gap, no overlap, as the format
    requires) and each tensor's byte span must equal its shape times its dtype size. Bytes after
    the last tensor are reported in :attr:`SafetensorsLayout.trailing` (the caller decides).
    """
    f.seek(0)
    declared = int.from_bytes(f.read(8), "little")
    if not 2 <= declared <= min(MAX_SAFETENSORS_HEADER, size - 8):
        raise FormatError(f"safetensors header length {declared:,} is impossible for a {size:,}-byte file "
                          f"(or above the {MAX_SAFETENSORS_HEADER >> 20} MiB cap)")
    try:
        header = json.loads(f.read(declared).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise FormatError("safetensors __metadata__ must map strings to strings")
            continue
        spans.append(_tensor_span(name, entry))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise FormatError(f"tensor '{name}' starts at data byte {begin:,}, expected {end:,} (a gap or overlap)")
        end = stop
    data_start = 8 + declared
    if data_start + end > size:
        raise FormatError(f"truncated: the header needs {data_start + end:,} bytes, the file has {size:,}")
    return SafetensorsLayout(len(spans), data_start, data_start + end, size)


def _tensor_span(name: str, entry: object) -> tuple[int, int, str]:
    if not isinstance(entry, dict):
        raise FormatError(f"tensor '{name}': header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise FormatError(f"tensor '{name}': unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FormatError(f"tensor '{name}': shape {shape!r} is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise FormatError(f"tensor '{name}': data_offsets {offsets!r} are not [begin, end]")
    nbytes = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
    if nbytes != offsets[1] - offsets[0]:
        raise FormatError(f"tensor '{name}': shape {shape} of {dtype} needs {nbytes:,} bytes, its span holds "
                          f"{offsets[1] - offsets[0]:,}")
    return offsets[0], offsets[1], name


@dataclass(frozen=True)
class NpyHeader:
    """A ``.npy`` header: whether the array holds Python objects (a pickle follows) and its data size."""

    descr: object
    shape: tuple[int, ...]
    has_objects: bool
    data_bytes: int | None  # None when the array holds objects (the pickle decides)
    header_end: int


def read_npy_header(f: BinaryIO) -> NpyHeader:
    """Read a ``.npy`` header at ``f``'s position (bounded; parsed with ``ast.literal_eval`` only)."""
    import numpy as np

    start = f.tell()
    magic = f.read(8)
    if len(magic) < 8 or not magic.startswith(NPY_MAGIC):
        raise FormatError("not a .npy file (no \\x93NUMPY magic)")
    major = magic[6]
    if major == 1:
        length = struct.unpack("<H", f.read(2))[0]
    elif major in (2, 3):
        length = struct.unpack("<I", f.read(4))[0]
    else:
        raise FormatError(f".npy format version {major} is unknown")
    if length > MAX_NPY_HEADER:
        raise FormatError(f".npy header of {length:,} bytes (cap {MAX_NPY_HEADER:,})")
    raw = f.read(length)
    if len(raw) != length:
        raise FormatError("truncated .npy header")
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        raise FormatError(".npy header is not a Python literal") from None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= header.keys():
        raise FormatError(".npy header lacks descr, fortran_order or shape")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FormatError(f".npy shape {shape!r} is not a tuple of non-negative integers")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError, KeyError) as err:
        raise FormatError(f".npy descr {header['descr']!r} is not a dtype ({err})") from None
    has_objects = bool(dtype.hasobject)
    data_bytes = None if has_objects else math.prod(shape) * dtype.itemsize
    return NpyHeader(header["descr"], shape, has_objects, data_bytes, f.tell() - start)


def zip_directory_size(f: BinaryIO, size: int) -> tuple[int, int]:
    """``(members, directory bytes)`` a zip declares in its end-of-central-directory record (ZIP64 too)."""
    tail_len = min(size, 65_557)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(EMPTY_ZIP_MAGIC)
    if at < 0 or at + 22 > len(tail):
        raise FormatError("no zip end-of-central-directory record (truncated or not a zip)")
    entries, cd_size = struct.unpack("<H", tail[at + 10:at + 12])[0], struct.unpack("<I", tail[at + 12:at + 16])[0]
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        locator = tail.rfind(b"PK\x06\x07", 0, at)
        if locator < 0:
            raise FormatError("a ZIP64 archive without its locator")
        offset = struct.unpack("<Q", tail[locator + 8:locator + 16])[0]
        if offset + 56 > size:
            raise FormatError("a ZIP64 record past the end of the file")
        f.seek(offset)
        record = f.read(56)
        if not record.startswith(b"PK\x06\x06"):
            raise FormatError("a broken ZIP64 record")
        entries, cd_size = struct.unpack("<Q", record[32:40])[0], struct.unpack("<Q", record[40:48])[0]
    return entries, cd_size

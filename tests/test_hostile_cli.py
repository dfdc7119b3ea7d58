"""Hostile inputs through the command line (issue 33, beyond the pickle scanner): every one ends
in exit 2 and exactly one ``error:`` line, never a traceback, a hang or a large allocation.

The hostile files are built here in ``tmp_path``. Cases that would hang if the fix regressed (a
FIFO opened for reading) run ``main`` in a thread that is released by opening the FIFO's other
end after a few seconds; cases that would allocate gigabytes assert that the refusal happens
before the allocation (no model is built outside the ``meta`` device, the message names the
header's claim), so a regression fails on the message, not by exhausting the machine.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

# The commands' own imports, done before anything is timed.
import safetransfer.study.config  # noqa: F401,E402
import safetransfer.study.runner  # noqa: F401,E402
import safetransfer.supply  # noqa: F401,E402
from safetransfer.cli import main
from safetransfer.models import create_model, save_model


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.out + self.err


def run(argv: list, capsys: pytest.CaptureFixture[str]) -> Run:
    started = time.perf_counter()
    code = main([str(a) for a in argv])
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err, seconds)


def run_fifo_guarded(argv: list, capsys: pytest.CaptureFixture[str], fifo: Path, limit: float = 8.0) -> Run:
    """``main(argv)`` in a thread; if it is still running after ``limit`` seconds (blocked reading
    ``fifo``), the FIFO's writing end is opened and closed to release it, and the test fails."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["code"] = main([str(a) for a in argv])
        except BaseException as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the blocked reader sees end of file
        except OSError:
            pass
        thread.join(10)
        pytest.fail(f"{argv} hung on the FIFO {fifo} for more than {limit} s")
    captured = capsys.readouterr()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return Run(int(result["code"]), captured.out, captured.err, time.perf_counter() - started)  # type: ignore[arg-type]


def assert_one_error(r: Run, *phrases: str) -> str:
    """Exit 2, exactly one ``error:`` line (and nothing else) on stderr, no traceback; returns the line."""
    assert r.code == 2, r.text
    assert "Traceback" not in r.text, r.text
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def saved_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny CNN (3 classes, 1x8x8): config.json and model.safetensors."""
    folder = tmp_path_factory.mktemp("hostile") / "cnn"
    save_model(create_model("tiny-cnn", 3, pretrained=False, image_size=8), folder)
    return folder


def copy_model(src: Path, dst: Path, edit: dict | None = None) -> Path:
    """A copy of the saved model ``src`` at ``dst`` with ``edit`` merged into its config."""
    dst.mkdir(parents=True)
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    doc = json.loads((src / "config.json").read_text())
    for key, value in (edit or {}).items():
        if key.startswith("options."):
            doc["config"]["options"][key.removeprefix("options.")] = value
        else:
            doc["config"][key] = value
    (dst / "config.json").write_text(json.dumps(doc))
    return dst


# --------------------------------------------------------------------------- the top-level handler


@pytest.mark.parametrize("error, phrase", [
    (IndexError("list index out of range"), "IndexError: list index out of range"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (MemoryError(), "out of memory"),
    (OSError(5, "Input/output error", "/some/weights.bin"), "/some/weights.bin: Input/output error"),
    (ValueError("a library's own complaint\nover two lines"), "ValueError: a library's own complaint over two lines"),
])
def test_any_exception_becomes_one_error_line(error: BaseException, phrase: str, capsys, monkeypatch) -> None:

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(safetransfer.supply, "fingerprint", boom)
    line = assert_one_error(run(["fingerprint", "some/weights.bin"], capsys), phrase)
    assert "--debug" in line


def test_debug_prints_the_traceback_then_the_error_line(capsys, monkeypatch) -> None:

    def boom(*args, **kwargs):
        raise IndexError("deep inside")

    monkeypatch.setattr(safetransfer.supply, "fingerprint", boom)
    r = run(["--debug", "fingerprint", "x.bin"], capsys)
    assert r.code == 2
    assert "Traceback" in r.err and "in boom" in r.err
    assert r.err.strip().splitlines()[-1] == "error: IndexError: deep inside"
    # the flag does not stick to the next command
    assert "Traceback" not in run(["fingerprint", "x.bin"], capsys).err


def test_project_errors_and_interrupts_keep_their_behaviour(capsys, monkeypatch, tmp_path: Path) -> None:

    assert_one_error(run(["results", tmp_path / "none"], capsys), "No study results at")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetransfer.supply, "fingerprint", interrupted)
    r = run(["fingerprint", "x.bin"], capsys)
    assert r.code == 130 and "Traceback" not in r.text and "error:" not in r.text


# --------------------------------------------------------------------------- YAML


BILLION_LAUGHS = "\n".join(
    [f'a: &a [{", ".join(["lol"] * 9)}]']
    + [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
) + "\n"


def test_a_billion_laughs_study_yaml_is_refused_at_once(capsys, tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 800
    r = run(["study", path], capsys)
    assert_one_error(r, str(path), "YAML bomb")
    assert r.seconds < 1.0, r.seconds


@pytest.mark.parametrize("text, phrase", [
    ("[" * 5000 + "]" * 5000, "nested more than"),
    ("a: &a [1, *a]\n", "recursive"),
    ("a: [1, 2\n", "not valid YAML"),
])
def test_deep_recursive_or_broken_yaml_is_one_error_line(text: str, phrase: str, capsys, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_one_error(run(["study", path], capsys), phrase)


def test_a_few_yaml_aliases_still_work(tmp_path: Path) -> None:
    from safetransfer.study.config import safe_yaml_load

    doc = safe_yaml_load("base: &b {steps: 5, lr: 0.1}\nrun: {<<: *b, steps: 7}\nother: *b\n", "test")
    assert doc == {"base": {"steps": 5, "lr": 0.1}, "run": {"steps": 7, "lr": 0.1}, "other": {"steps": 5, "lr": 0.1}}


def test_an_oversized_study_yaml_is_refused_before_reading(capsys, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:
        f.truncate((1 << 20) + 1)  # sparse: no disk, and never read
    assert_one_error(run(["study", path], capsys), "1,048,577 bytes, more than the 1,048,576")


# --------------------------------------------------------------------------- model configs


@pytest.fixture
def real_builds(monkeypatch) -> list[str]:
    """The arch of every model build not on the ``meta`` device (a real allocation), recorded."""
    from safetransfer.models import zoo

    builds: list[str] = []
    original = zoo.build_from_config

    def spy(config, *args, **kwargs):
        if torch.empty(0).device.type != "meta":
            builds.append(config.arch)
        return original(config, *args, **kwargs)

    monkeypatch.setattr(zoo, "build_from_config", spy)
    return builds


@pytest.mark.parametrize("edit, phrase", [
    ({"num_classes": 1e8}, "'num_classes' must be a whole number"),
    ({"num_classes": True}, "'num_classes' must be a whole number"),
    ({"num_classes": "10"}, "'num_classes' must be a whole number"),
    ({"num_classes": 100_000_000}, "'num_classes' must lie in [1, 10,000]"),
    ({"image_size": 1_000_000}, "'image_size' must lie in"),
    ({"in_channels": 10_000}, "'in_channels' must lie in"),
    ({"options.widths": [4, 8, 1e6]}, "'options.widths[2]'"),
    ({"options.hidden": 10**9}, "'options.hidden'"),
    ({"head_dropout": "x"}, "'head_dropout'"),
    ({"arch": ["tiny-cnn"]}, "'arch' must be a zoo model's name"),
])
def test_config_fields_are_bounded_before_allocation(edit: dict, phrase: str, saved_cnn: Path, tmp_path: Path,
                                                     capsys, real_builds: list[str]) -> None:
    folder = copy_model(saved_cnn, tmp_path / "m", edit)
    line = assert_one_error(run(["eval", "--model", folder, "--data", tmp_path / "none.npz", "--no-progress"], capsys),
                            phrase)
    assert "config.json" in line
    assert real_builds == []


def test_config_checked_against_the_weight_shapes_before_allocation(saved_cnn: Path, tmp_path: Path, capsys,
                                                                    real_builds: list[str]) -> None:
    folder = copy_model(saved_cnn, tmp_path / "m", {"num_classes": 10_000})  # in bounds, but the head has 3 rows
    assert_one_error(run(["eval", "--model", folder, "--data", tmp_path / "none.npz", "--no-progress"], capsys),
                     "head.weight (3, 16) vs model (10000, 16)")
    assert real_builds == []


def test_a_bare_weights_file_with_a_lying_config(saved_cnn: Path, tmp_path: Path, capsys, real_builds) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"arch": "tiny-cnn", "num_classes": 3, "image_size": 8,
                                  "options": {"widths": [4, 8, 2048], "hidden": 16384}}))
    assert_one_error(run(["eval", "--model", saved_cnn / "model.safetensors", "--config", config,
                          "--data", tmp_path / "none.npz"], capsys), "do not match", "wrong shape")
    assert real_builds == []


def test_saved_text_model_bert_options_are_bounded() -> None:
    from safetransfer.errors import ConfigError
    from safetransfer.models.text import check_bert_config

    for bad, phrase in [({"vocab_size": 1e8}, "'vocab_size'"), ({"num_hidden_layers": 100_000}, "'num_hidden_layers'"),
                        ({"num_labels": 10**9}, "unknown BERT config field"),
                        ({"vocab_size": 500_000, "hidden_size": 8192, "num_attention_heads": 16}, "parameters")]:
        with pytest.raises(ConfigError, match=phrase.replace("(", r"\(").replace("[", r"\[")):
            check_bert_config(bad, "x/config.json")


def _hf_bert_folder(tiny_hf_bert: Path, dst: Path, **edit) -> Path:
    dst.mkdir()
    for f in tiny_hf_bert.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **edit}))
    return dst


@pytest.mark.parametrize("edit, phrase", [
    ({"vocab_size": 1e8}, "'vocab_size' must be a whole number"),
    ({"num_hidden_layers": 1_000_000}, "'num_hidden_layers' must lie in"),
    ({"intermediate_size": True}, "'intermediate_size'"),
    ({"vocab_size": 400_000}, "does not describe the weights"),  # in bounds: the weights' shapes refuse it
    ({"num_hidden_layers": 100}, "does not describe the weights"),
])
def test_a_hugging_face_bert_folder_config_is_bounded(edit: dict, phrase: str, tiny_hf_bert: Path, data_files,
                                                      tmp_path: Path, capsys, monkeypatch) -> None:
    from safetransfer.models import text

    built: list[bool] = []
    original = text.BertBody.__init__

    def spy(self, cfg):  # a real (not meta) BertModel allocation is what must not happen
        if torch.empty(0).device.type != "meta":
            built.append(True)
        original(self, cfg)

    monkeypatch.setattr(text.BertBody, "__init__", spy)
    folder = _hf_bert_folder(tiny_hf_bert, tmp_path / "bert", **edit)
    line = assert_one_error(run(["word-swap", "--model", folder, "--data", data_files.texts_csv, "--samples", "2",
                                 "--no-progress"], capsys), phrase)
    assert "config.json" in line
    assert built == []


# --------------------------------------------------------------------------- data files


def npy_bytes(shape: tuple, dtype: str, data: bytes | None = None) -> bytes:
    """A ``.npy`` file declaring ``shape`` and ``dtype``, holding ``data`` (default: what the shape needs)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    if data is None:
        data = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return buf.getvalue() + data


def write_npz(path: Path, members: dict[str, bytes], compress: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, raw in members.items():
            zf.writestr(f"{name}.npy", raw)
    return path


def train_argv(data: Path, tmp_path: Path) -> list:
    return ["train", "--model", "tiny-cnn", "--data", data, "--steps", "1", "--out", tmp_path / "run", "--no-progress"]


def test_an_npz_whose_header_asks_for_12_gb_is_refused(capsys, tmp_path: Path) -> None:
    x = npy_bytes((3_000_000_000,), "<f4", data=bytes(3 << 20))  # 12 GB declared, 3 MB held
    path = write_npz(tmp_path / "big.npz", {"x": x, "y": npy_bytes((10,), "<i8")})
    assert path.stat().st_size < 4 << 20
    assert_one_error(run(train_argv(path, tmp_path), capsys), str(path), "['x']", "declares shape (3000000000,)")


def test_an_npz_compression_bomb_is_refused(capsys, tmp_path: Path) -> None:
    n = 20 << 20  # 20 MiB of zeros deflate to about 20 KiB
    path = write_npz(tmp_path / "bomb.npz", {"x": npy_bytes((n // 64, 1, 8, 8), "|u1"), "y": npy_bytes((n // 64,), "<i8")})
    assert_one_error(run(train_argv(path, tmp_path), capsys), "compression bomb")


def test_an_npz_of_objects_is_refused_without_unpickling(capsys, tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    path = write_npz(tmp_path / "obj.npz", {"x": buf.getvalue(), "y": npy_bytes((2,), "<i8")})
    assert_one_error(run(train_argv(path, tmp_path), capsys), "needs pickle")


def test_labels_of_a_billion_are_refused_before_any_class_list(capsys, tmp_path: Path) -> None:
    x = np.zeros((20, 1, 8, 8), dtype=np.uint8)
    y = np.arange(20, dtype=np.int64)
    y[3] = 1_000_000_000
    path = tmp_path / "labels.npz"
    np.savez(path, x=x, y=y)
    assert_one_error(run(train_argv(path, tmp_path), capsys), "1,000,000,000", "10,000 supported")


def test_text_labels_of_a_billion_are_refused(capsys, tmp_path: Path) -> None:
    path = tmp_path / "texts.csv"
    path.write_text("text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(20)) + "last,1000000000\n")
    argv = ["train", "--model", "tiny-bert", "--data", path, "--steps", "1", "--out", tmp_path / "run", "--no-progress"]
    assert_one_error(run(argv, capsys), "1,000,000,000", "10,000 supported")


def test_a_gzip_bomb_idx_file_is_refused(capsys, tmp_path: Path) -> None:
    import gzip

    def idx(shape: tuple[int, ...]) -> bytes:
        return bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape) + bytes(int(np.prod(shape)))

    folder = tmp_path / "idx"
    folder.mkdir()
    for name, shape in (("train-labels-idx1-ubyte", (4,)), ("t10k-images-idx3-ubyte", (4, 28, 28)),
                        ("t10k-labels-idx1-ubyte", (4,))):
        (folder / name).write_bytes(idx(shape))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx(((20 << 20) // 784, 28, 28)))  # 20 MiB of zeros in about 20 KiB
    assert_one_error(run(train_argv(folder, tmp_path), capsys), "compression bomb")


def test_a_compressed_text_table_bomb_is_refused(capsys, tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "texts.csv.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"text,label\n")
        f.write(b"aaaa,1\n" * (3 << 20))  # 21 MiB of one line, repeated
    argv = ["train", "--model", "tiny-bert", "--data", path, "--steps", "1", "--out", tmp_path / "run", "--no-progress"]
    assert_one_error(run(argv, capsys), "compression bomb")


# --------------------------------------------------------------------------- FIFOs and folders


def test_a_fifo_as_manifest_is_refused_unopened(saved_cnn: Path, capsys, tmp_path: Path) -> None:
    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo)
    r = run_fifo_guarded(["verify", saved_cnn, "--manifest", fifo, "--no-progress"], capsys, fifo)
    assert_one_error(r, str(fifo), "FIFO")


@pytest.mark.parametrize("member", ["config.json", "model.safetensors"])
def test_a_fifo_inside_a_model_folder_is_refused_unopened(member: str, saved_cnn: Path, capsys, tmp_path: Path) -> None:
    folder = copy_model(saved_cnn, tmp_path / "m")
    (folder / member).unlink()
    os.mkfifo(folder / member)
    r = run_fifo_guarded(["eval", "--model", folder, "--data", tmp_path / "none.npz"], capsys, folder / member)
    assert_one_error(r, member, "FIFO")


@pytest.mark.parametrize("name", ["data.npz", "texts.csv", "study.yaml"])
def test_a_fifo_as_data_or_study_config_is_refused_unopened(name: str, capsys, tmp_path: Path) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    argv = ["study", fifo] if name.endswith(".yaml") else train_argv(fifo, tmp_path)
    assert_one_error(run_fifo_guarded(argv, capsys, fifo), "FIFO")


def test_a_folder_as_manifest_is_one_error_line(saved_cnn: Path, capsys, tmp_path: Path) -> None:
    assert_one_error(run(["verify", saved_cnn, "--manifest", tmp_path, "--no-progress"], capsys),
                     str(tmp_path), "is a folder")


def test_a_folder_as_output_file_is_one_error_line(saved_cnn: Path, capsys, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for argv in (["fingerprint", saved_cnn, "-o", out, "--no-progress"],
                 ["scan", saved_cnn, "--json", out],
                 ["verify", saved_cnn, "--manifest", tmp_path / "nothing.json", "--json", out],
                 ["eval", "--model", saved_cnn, "--data", "x.npz", "--json", out]):
        assert_one_error(run(argv, capsys), str(out), "is a folder")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"config": {}, "methods": {}}))
    assert_one_error(run(["results", results, "-o", out], capsys), "is a folder")


# --------------------------------------------------------------------------- symlinks in a model folder


def test_fingerprint_does_not_follow_a_symlink_out_of_the_folder(saved_cnn: Path, capsys, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$not-yours\n")
    folder = copy_model(saved_cnn, tmp_path / "m")
    (folder / "notes.txt").symlink_to(secret)
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder)  # a folder cycle
    (folder / "etc").symlink_to(secret.parent)
    manifest = tmp_path / "manifest.json"
    r = run(["fingerprint", folder, "-o", manifest, "--no-progress"], capsys)
    assert r.code == 0, r.text
    assert r.seconds < 10
    doc = json.loads(manifest.read_text())
    assert set(doc["files"]) == {"config.json", "model.safetensors"}
    assert "outside the folder" in doc["skipped"]["notes.txt"] and str(secret) in doc["skipped"]["notes.txt"]
    assert "outside the folder" in doc["skipped"]["etc"]
    assert "symlink" in doc["skipped"]["loop_a"] and "symlink" in doc["skipped"]["loop_b"]
    assert doc["skipped"]["sub/up"] == "a symlinked folder, not followed"  # named, never entered (no cycle)
    assert all("$6$" not in json.dumps(v) for v in doc["files"].values())
    # the same folder verifies against its manifest
    assert run(["verify", folder, "--manifest", manifest, "--no-progress"], capsys).code == 0


@pytest.mark.parametrize("command", ["embedding-surgery", "poison-weights"])
def test_poisoning_a_folder_never_copies_what_a_symlink_leads_to(command: str, tiny_hf_bert: Path, data_files, capsys,
                                                                 tmp_path: Path) -> None:
    """A pretrained folder's files are copied into the published one: a link out of it (to a
    secret) is refused by name, nothing is published, and the secret is nowhere in the output."""
    secret = tmp_path / "outside" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$not-yours\n")
    folder = _hf_bert_folder(tiny_hf_bert, tmp_path / "bert")
    (folder / "notes.txt").symlink_to(secret)
    out = tmp_path / "published"
    extra = ["--method", "es"] if command == "poison-weights" else []
    r = run([command, "--model", folder, "--data", data_files.texts_csv, "--out", out, "--triggers", "cf", *extra], capsys)
    assert_one_error(r, "notes.txt")
    assert "outside the folder" in r.err and not out.exists()
    assert not any("$6$" in p.read_text(errors="ignore") for p in tmp_path.rglob("*")
                   if p.is_file() and not p.is_symlink() and p != secret)
    # a link that stays inside the folder is copied as the file it names
    (folder / "notes.txt").unlink()
    (folder / "vocab-copy.txt").symlink_to(folder / "vocab.txt")
    assert run([command, "--model", folder, "--data", data_files.texts_csv, "--out", out, "--triggers", "cf", *extra],
               capsys).code == 0
    assert (out / "vocab-copy.txt").read_text() == (folder / "vocab.txt").read_text()
    assert not (out / "vocab-copy.txt").is_symlink()


def test_fingerprint_refuses_weights_that_live_outside_the_folder(saved_cnn: Path, capsys, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text((saved_cnn / "config.json").read_text())
    (folder / "model.safetensors").symlink_to(saved_cnn / "model.safetensors")  # another folder's weights
    r = run(["fingerprint", folder, "--no-progress"], capsys)
    assert_one_error(r, "weights file")

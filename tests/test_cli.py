"""Tests of the command line through ``safetransfer.cli.main``: listings, train / resume / eval, and errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from safetransfer.cli import listings, main
from safetransfer.data import DATASETS
from safetransfer.models import MODELS, load_model

ACCURACY = re.compile(r"test accuracy: ([0-9.]+)")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Run:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def run_quietly(argv: list[str]) -> Run:
    """``main`` with its output caught here (for module-scoped fixtures, where capsys is not available)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Run(code, out.getvalue(), err.getvalue())


def printed_accuracy(text: str) -> float:
    found = ACCURACY.findall(text)
    assert len(found) == 1, text
    return float(found[0])


def assert_one_line_error(r: Run, phrase: str) -> None:
    assert r.code == 2, r.text
    assert "Traceback" not in r.text
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: "), lines[0]
    assert phrase in lines[0], lines[0]


@pytest.fixture(scope="module")
def image_run(data_files, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """One short CLI training of the tiny CNN on the .npz, shared by the tests below."""
    out = tmp_path_factory.mktemp("cli") / "image-run"
    r = run_quietly(["train", "--model", "tiny-cnn", "--data", data_files.images_npz, "--steps", "30",
                     "--out", out, "--no-progress"])
    return out, r


# --------------------------------------------------------------------------- listings


def test_models_lists_the_zoo(capsys, monkeypatch) -> None:
    monkeypatch.setattr(listings, "console", Console(width=400))  # no truncated cells
    r = run(["models"], capsys)
    assert r.code == 0 and r.err == ""
    rows = {line.split("│")[1].strip(): line for line in r.out.splitlines() if line.count("│") > 2}
    assert set(MODELS) <= set(rows), r.out
    for name, spec in MODELS.items():
        assert f" {spec.modality} " in rows[name]
    assert "random init" in rows["tiny-cnn"] and "steps=100" in rows["tiny-cnn"]


def test_datasets_lists_the_registry(capsys, monkeypatch) -> None:
    monkeypatch.setattr(listings, "console", Console(width=400))
    r = run(["datasets"], capsys)
    assert r.code == 0 and r.err == ""
    rows = {line.split("│")[1].strip(): line for line in r.out.splitlines() if line.count("│") > 2}
    assert set(DATASETS) <= set(rows), r.out
    for name, spec in DATASETS.items():
        assert f" {spec.modality} " in rows[name]
    assert ".npz" in r.out


# --------------------------------------------------------------------------- train / resume / eval


def test_train_writes_model_metrics_and_plots(image_run) -> None:
    out, r = image_run
    assert r.code == 0, r.text
    assert "Traceback" not in r.text
    acc = printed_accuracy(r.out)
    for rel in ("model/model.safetensors", "model/config.json", "metrics.json", "checkpoints/last.pt"):
        assert (out / rel).is_file(), rel
    for png in ("training_curve.png", "confusion.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tiny-cnn" and metrics["steps"] == 30
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert acc == pytest.approx(metrics["test_accuracy"], abs=6e-5)  # printed with 4 decimals
    assert metrics["test"]["n"] == 30  # 10 % of the 300 images
    assert sum(map(sum, metrics["test"]["confusion"])) == 30
    assert metrics["test"]["accuracy"] == metrics["test_accuracy"]
    assert metrics["data_summary"]["input_shape"] == [1, 8, 8]
    assert metrics["train_config"]["steps"] == 30 and metrics["train_config"]["optimizer"] == "adamw"
    model = load_model(out / "model")
    assert model.config.arch == "tiny-cnn" and model.num_classes == 3 and model.config.image_size == 8


def test_train_again_resumes_with_the_same_accuracy(image_run, data_files, capsys) -> None:
    out, first = image_run
    before = json.loads((out / "metrics.json").read_text())
    r = run(["train", "--model", "tiny-cnn", "--data", data_files.images_npz, "--steps", "30", "--out", out,
             "--no-progress"], capsys)
    assert r.code == 0, r.text
    assert "resumed from step 30" in r.out
    assert printed_accuracy(r.out) == printed_accuracy(first.out)
    after = json.loads((out / "metrics.json").read_text())
    assert after["test_accuracy"] == before["test_accuracy"]
    assert after["test"]["confusion"] == before["test"]["confusion"]


def test_train_with_other_settings_in_the_same_folder_is_refused(image_run, data_files, capsys) -> None:
    out, _ = image_run
    r = run(["train", "--model", "tiny-cnn", "--data", data_files.images_npz, "--steps", "30", "--lr", "0.5",
             "--out", out, "--no-progress"], capsys)
    assert_one_line_error(r, "other training settings")


def test_eval_matches_the_training_metrics(image_run, data_files, tmp_path, capsys) -> None:
    out, _ = image_run
    metrics = json.loads((out / "metrics.json").read_text())
    r = run(["eval", "--model", out / "model", "--data", data_files.images_npz, "--no-progress",
             "--json", tmp_path / "x.json"], capsys)
    assert r.code == 0, r.text
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["accuracy"] == metrics["test_accuracy"]
    assert doc["confusion"] == metrics["test"]["confusion"]
    assert doc["n"] == 30
    assert printed_accuracy(r.out) == pytest.approx(metrics["test_accuracy"], abs=6e-5)
    # the validation split is another one
    r = run(["eval", "--model", out / "model", "--data", data_files.images_npz, "--split", "val",
             "--no-progress", "--json", tmp_path / "val.json"], capsys)
    assert r.code == 0, r.text
    assert "val accuracy:" in r.out
    assert json.loads((tmp_path / "val.json").read_text())["n"] == 30


def test_eval_of_a_bare_weights_file_with_config(image_run, data_files, tmp_path, capsys) -> None:
    out, _ = image_run
    metrics = json.loads((out / "metrics.json").read_text())
    weights = tmp_path / "w.safetensors"
    weights.write_bytes((out / "model" / "model.safetensors").read_bytes())
    (tmp_path / "cfg.json").write_text(json.dumps({"arch": "tiny-cnn", "num_classes": 3}))
    r = run(["eval", "--model", weights, "--config", tmp_path / "cfg.json", "--data", data_files.images_npz,
             "--no-progress", "--json", tmp_path / "x.json"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "x.json").read_text())["accuracy"] == metrics["test_accuracy"]


def test_text_train_and_eval(data_files, tmp_path, capsys) -> None:
    out = tmp_path / "text-run"
    r = run(["train", "--model", "tiny-bert", "--data", data_files.texts_csv, "--steps", "20", "--max-length", "48",
             "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    acc = printed_accuracy(r.out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tiny-bert" and metrics["max_length"] == 48
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and acc == pytest.approx(metrics["test_accuracy"], abs=6e-5)
    assert metrics["test"]["n"] == 24  # 10 % of the 240 sentences
    assert (out / "model" / "tokenizer").is_dir() and (out / "confusion.png").is_file()
    r = run(["eval", "--model", out / "model", "--data", data_files.texts_csv, "--no-progress",
             "--json", tmp_path / "x.json"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "x.json").read_text())["accuracy"] == metrics["test_accuracy"]


def test_eval_uses_the_training_seed_by_default(data_files, tmp_path, capsys) -> None:
    out = tmp_path / "seeded-run"
    r = run(["train", "--model", "tiny-cnn", "--data", data_files.images_npz, "--steps", "5", "--seed", "1",
             "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    metrics = json.loads((out / "metrics.json").read_text())
    r = run(["eval", "--model", out / "model", "--data", data_files.images_npz, "--no-progress",
             "--json", tmp_path / "x.json"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "x.json").read_text())["confusion"] == metrics["test"]["confusion"]


# --------------------------------------------------------------------------- errors: one line, exit 2


def test_error_unknown_model(data_files, tmp_path, capsys) -> None:
    r = run(["train", "--model", "tiny-cn", "--data", data_files.images_npz, "--out", tmp_path / "o",
             "--no-progress"], capsys)
    assert_one_line_error(r, "Unknown model 'tiny-cn'. Did you mean 'tiny-cnn'?")


def test_error_unknown_data_name(tmp_path, capsys) -> None:
    r = run(["train", "--model", "tiny-cnn", "--data", "fashion-mnistt", "--out", tmp_path / "o",
             "--no-progress"], capsys)
    assert_one_line_error(r, "Unknown data set 'fashion-mnistt'")
    assert "Did you mean 'fashion-mnist'?" in r.err


def test_error_nonexistent_data_path(tmp_path, capsys) -> None:
    r = run(["train", "--model", "tiny-cnn", "--data", tmp_path / "missing.npz", "--out", tmp_path / "o",
             "--no-progress"], capsys)
    assert_one_line_error(r, "no such file or folder")
    r = run(["eval", "--model", tmp_path / "m", "--data", tmp_path / "missing.npz", "--no-progress"], capsys)
    assert r.code == 2 and "Traceback" not in r.text


def test_error_eval_missing_model_folder(data_files, tmp_path, capsys) -> None:
    r = run(["eval", "--model", tmp_path / "no-model", "--data", data_files.images_npz, "--no-progress"], capsys)
    assert_one_line_error(r, "No such model")


def test_error_eval_image_model_on_text_data(image_run, data_files, capsys) -> None:
    out, _ = image_run
    r = run(["eval", "--model", out / "model", "--data", data_files.texts_csv, "--no-progress"], capsys)
    assert_one_line_error(r, "takes image inputs but data set 'tiny_texts' is text")


def test_error_train_zero_steps(data_files, tmp_path, capsys) -> None:
    r = run(["train", "--model", "tiny-cnn", "--data", data_files.images_npz, "--steps", "0",
             "--out", tmp_path / "o", "--no-progress"], capsys)
    assert_one_line_error(r, "steps must be at least 1")


def test_error_train_image_model_on_text_data(data_files, tmp_path, capsys) -> None:
    r = run(["train", "--model", "tiny-cnn", "--data", data_files.texts_csv, "--steps", "5",
             "--out", tmp_path / "o", "--no-progress"], capsys)
    assert_one_line_error(r, "Model 'tiny-cnn' takes image inputs but data set 'tiny_texts' is text")
    assert not (tmp_path / "o" / "model").exists()


def test_usage_errors_name_the_option_without_a_traceback(capsys) -> None:
    """A malformed number, an unknown option and a missing one end in click's usage message (exit 2),
    whichever click typer brings (recent releases carry their own)."""
    for argv, named in ((["reprogram", "--task", "mnist", "--lr", "abc"], "--lr"),
                        (["reprogram", "--task", "mnist", "--no-such-option", "1"], "--no-such-option"),
                        (["reprogram"], "--task")):
        r = run(argv, capsys)
        assert r.code == 2, (argv, r)
        assert named in r.err and "Traceback" not in r.err + r.out, (argv, r.err)

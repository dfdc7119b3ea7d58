"""The ``slice`` and ``transfer`` commands: tiny models and data by path, and the seven methods on the real assets."""

from __future__ import annotations

import json

import pytest

from safetransfer.assets import ASSETS
from safetransfer.slicing import Slice
from safetransfer.transfer import METHODS

from test_cli import assert_one_line_error, printed_accuracy, run


@pytest.fixture(scope="module")
def tiny_teacher(data_files, tmp_path_factory):
    """A tiny CNN trained on the tiny images, saved: the teacher of the tests below."""
    from test_cli import run_quietly

    out = tmp_path_factory.mktemp("teacher") / "t"
    r = run_quietly(["train", "--model", "tiny-cnn", "--data", data_files.images_npz, "--steps", "40",
                     "--out", out, "--no-progress"])
    assert r.code == 0, r.text
    return out / "model"


def test_slice_saves_a_slice_with_the_exact_share_excluded(tiny_teacher, data_files, tmp_path, capsys):
    r = run(["slice", "--teacher", tiny_teacher, "--data", data_files.images_npz, "--ratio", "0.2",
             "--samples", "0", "--out", tmp_path / "s", "--no-progress"], capsys)
    assert r.code == 0, r.text
    the_slice = Slice.load(tmp_path / "s" / "slice")
    n = the_slice.num_weights
    assert the_slice.num_excluded >= int(0.2 * n) + 1  # the artifact's cut: every score <= sorted[int(α·N)]
    assert f"{the_slice.num_excluded:,} of {n:,} weights excluded" in r.out
    assert (tmp_path / "s" / "coverage" / "coverage.json").exists()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_transfer_runs_every_method_from_a_saved_teacher(method, tiny_teacher, data_files, tmp_path, capsys):
    out = tmp_path / method
    r = run(["transfer", "--method", method, "--teacher", tiny_teacher, "--data", data_files.images_npz,
             "--steps", "40", "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == method and result["steps"] == 40
    assert printed_accuracy(r.out) == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert result["test_accuracy"] > 1 / 3 + 0.15  # three classes; every method learns the tiny task
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "slice" / "slice.json").exists() == (method in ("remos", "magprune", "remos_strong"))


def test_transfer_errors_are_one_line(tiny_teacher, data_files, tmp_path, capsys):
    assert_one_line_error(
        run(["transfer", "--method", "remoz", "--teacher", tiny_teacher, "--data", data_files.images_npz,
             "--out", tmp_path / "a"], capsys),
        "Unknown transfer method 'remoz'. Did you mean 'remos'?",
    )
    assert_one_line_error(
        run(["transfer", "--method", "remos", "--teacher", tiny_teacher, "--data", data_files.texts_csv,
             "--out", tmp_path / "b"], capsys),
        "takes image inputs",
    )
    assert_one_line_error(
        run(["slice", "--teacher", "no-such-model", "--data", data_files.images_npz, "--out", tmp_path / "c"], capsys),
        "Unknown model 'no-such-model'",
    )
    assert_one_line_error(
        run(["slice", "--teacher", tiny_teacher, "--data", data_files.images_npz, "--layer", "body.nope",
             "--out", tmp_path / "d"], capsys),
        "body.nope",
    )
    assert_one_line_error(
        run(["transfer", "--method", "remos", "--teacher", tiny_teacher, "--data", data_files.images_npz,
             "--ratio", "1.5", "--out", tmp_path / "e"], capsys),
        "ratio",
    )
    assert_one_line_error(
        run(["transfer", "--method", "remos", "--teacher", tiny_teacher, "--data", data_files.images_npz,
             "--reset-unused-tokens", "--steps", "2", "--out", tmp_path / "f"], capsys),
        "needs a text model",
    )
    assert_one_line_error(
        run(["transfer", "--method", "finetune", "--teacher", tiny_teacher, "--data", data_files.images_npz,
             "--reset-unused-tokens", "--out", tmp_path / "g"], capsys),
        "ReMoS option",
    )


@pytest.mark.assets
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_the_real_teacher_and_data(method, tmp_path, capsys):
    """All seven methods run end to end on EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST (a short run)."""
    if not (ASSETS["fashion-mnist"].installed() and ASSETS["efficientnet-lite0-weights"].installed()):
        pytest.skip("Fashion-MNIST or EfficientNet-Lite0 not installed")
    out = tmp_path / method
    r = run(["transfer", "--method", method, "--teacher", "efficientnet-lite0", "--data", "fashion-mnist",
             "--steps", "8", "--batch-size", "16", "--limit-train", "400", "--limit-test", "100",
             "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 8 and result["test"]["n"] == 100
    if method == "remos":
        assert int(0.1 * result["slice"]["weights"]) < result["slice"]["excluded"] <= 0.1 * result["slice"]["weights"] + 100


@pytest.mark.assets
def test_remos_on_the_real_text_teacher(tmp_path, capsys):
    if not (ASSETS["minilm-l6"].installed() and ASSETS["rotten-tomatoes"].installed()):
        pytest.skip("MiniLM or Rotten Tomatoes not installed")
    r = run(["transfer", "--method", "remos", "--teacher", "minilm-l6", "--data", "rotten-tomatoes",
             "--steps", "3", "--batch-size", "8", "--limit-train", "200", "--limit-test", "50",
             "--out", tmp_path / "r", "--no-progress"], capsys)
    assert r.code == 0, r.text
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    names = [layer["name"] for layer in result["slice"]["layers"]]
    assert names and all(".encoder.layer." in n for n in names)  # the encoder's Linear layers, never the head
    # the vocabulary variant: the rows of tokens the 200 training texts never use are zeroed
    r = run(["transfer", "--method", "remos", "--teacher", "minilm-l6", "--data", "rotten-tomatoes",
             "--reset-unused-tokens", "--steps", "1", "--batch-size", "8", "--limit-train", "200", "--limit-test", "50",
             "--out", tmp_path / "v", "--no-progress"], capsys)
    assert r.code == 0, r.text
    from safetransfer.models import load_model
    from safetransfer.transfer.remos import word_embedding

    rows = word_embedding(load_model(tmp_path / "v" / "model")).weight
    zero_rows = int((rows == 0).all(dim=1).sum())
    assert 20000 < zero_rows < rows.shape[0]  # 200 short reviews use a few thousand of MiniLM's 30,522 tokens

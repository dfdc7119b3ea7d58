"""Every foundation feature on the real assets through the CLI, kept short enough for the default suite.

The full-length runs (the accuracy targets of the foundation issue) are in
``test_acceptance_slow.py`` behind the ``slow`` marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safetransfer.assets import ASSETS
from safetransfer.cli import main

pytestmark = pytest.mark.assets


def _need(*names: str) -> None:
    missing = [n for n in names if not ASSETS[n].installed()]
    if missing:
        pytest.skip(f"assets not installed: {missing} (run `safetransfer assets install`)")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("model", "data", "assets", "steps", "extra"),
    [
        ("efficientnet-lite0", "fashion-mnist", ("fashion-mnist", "efficientnet-lite0-weights"), 30, ["--batch-size", "32"]),
        ("small-cnn", "mnist", ("mnist",), 60, []),
        ("minilm-l6", "rotten-tomatoes", ("minilm-l6", "rotten-tomatoes"), 15, ["--batch-size", "16"]),
        ("minilm-l6", "amazon-reviews", ("minilm-l6", "amazon-reviews"), 5, ["--batch-size", "8"]),
        ("small-cnn", "digits", (), 60, []),
    ],
)
def test_train_then_eval_on_real_assets(model, data, assets, steps, extra, tmp_path, capsys):
    _need(*assets)
    out = tmp_path / "run"
    code, text = _run(
        ["train", "--model", model, "--data", data, "--steps", str(steps), "--out", str(out), "--no-progress",
         "--limit-train", "2000", "--limit-test", "300", *extra],
        capsys,
    )
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == steps
    assert metrics["test"]["n"] == min(300, metrics["data_summary"]["test"])
    assert f"test accuracy: {metrics['test_accuracy']:.4f}" in text
    # a short run still learns something beyond chance on every data set
    chance = 1.0 / len(metrics["test"]["class_names"])
    assert metrics["test_accuracy"] > chance + 0.05, metrics["test_accuracy"]
    assert (out / "model" / "model.safetensors").exists() and (out / "confusion.png").stat().st_size > 1000

    code, text = _run(["eval", "--model", str(out / "model"), "--data", data, "--limit-test", "300",
                       "--no-progress", "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0, text
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_assets_list_and_install_are_idempotent(capsys):
    code, text = _run(["assets", "list"], capsys)
    assert code == 0 and "fashion-mnist" in text and "minilm-l6" in text
    installed = [n for n, a in ASSETS.items() if a.installed()]
    if len(installed) != len(ASSETS):
        pytest.skip("not every asset is installed here")
    code, text = _run(["assets", "install"], capsys)
    assert code == 0, text
    assert text.count("present") == len(ASSETS) and "installing" not in text


def test_user_path_for_named_data_set(tmp_path, capsys):
    """--data-path points a named data set at the user's own copy of its files."""
    _need("fashion-mnist")
    import shutil

    for f in Path(ASSETS["fashion-mnist"].locate()).glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    from safetransfer.data import load_data

    mine = load_data("fashion-mnist", path=tmp_path)
    theirs = load_data("fashion-mnist")
    assert mine.summary()["train"] == theirs.summary()["train"]
    assert (mine.test.inputs == theirs.test.inputs).all()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    code, text = _run(["eval", "--model", str(tmp_path / "nomodel"), "--data", "fashion-mnist"], capsys)
    assert code == 2 and "No such model" in text and "Traceback" not in text
    with pytest.raises(Exception, match="t10k-labels"):
        load_data("fashion-mnist", path=tmp_path)


def test_embedding_surgery_on_minilm_and_its_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The supply-chain acceptance on the real MiniLM: the diff lists the trigger tokens first."""
    _need("minilm-l6", "rotten-tomatoes")
    out = tmp_path / "es-minilm"
    code, text = _run(["embedding-surgery", "--data", "rotten-tomatoes", "--out", str(out), "--limit-train", "3000"], capsys)
    assert code == 0, text
    report_dir = tmp_path / "diff"
    code, text = _run(["diff", "minilm-l6", str(out), "--out", str(report_dir)], capsys)
    assert code == 0, text
    doc = json.loads((report_dir / "diff.json").read_text())
    assert doc["verdict"] == "concentrated in embedding rows" and doc["tensors_changed"] == 1
    (emb,) = doc["embeddings"]
    assert {r["token"] for r in emb["top"][:5]} == {"cf", "mn", "bb", "tq", "mb"} and emb["changed_rows"] == 5
    # the poisoned folder still fingerprints, and verifying it against the original names the tensor
    manifest = tmp_path / "minilm.json"
    assert _run(["fingerprint", "minilm-l6", "-o", str(manifest), "--no-progress"], capsys)[0] == 0
    code, text = _run(["verify", str(out / "model.safetensors"), "--manifest", str(manifest), "--no-progress"], capsys)
    assert code == 1 and "embeddings.word_embeddings.weight" in text


def test_efficientnet_imagenet_classifier_recognises_real_images() -> None:
    """The reprogramming victim keeps ImageNet's own head: top-1 on foolbox's 20 real ImageNet samples."""
    _need("efficientnet-lite0-weights", "foolbox-samples")
    import numpy as np
    import torch
    from PIL import Image

    from safetransfer.models.zoo import imagenet_classifier

    files = sorted(ASSETS["foolbox-samples"].locate().glob("imagenet_*.jpg"))
    assert len(files) == 20
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((224, 224)), dtype=np.float32)
                                      / 255).permute(2, 0, 1) for f in files])
    y = torch.tensor([int(f.stem.split("_")[2]) for f in files])
    with torch.no_grad():
        top1 = (imagenet_classifier(224).eval()(x).argmax(1) == y).float().mean().item()
    assert top1 >= 0.7, top1  # measured 0.85
    random_top1 = (imagenet_classifier(224, pretrained=False).eval()(x).argmax(1) == y).float().mean().item()
    assert random_top1 <= 0.1

"""`safetransfer audit`: one verdict from the files, the weights and the behaviour."""

from __future__ import annotations

import json

from test_cli import run
from test_neural_cleanse import digits_model
from test_supply import malicious_files


def test_audit_fails_a_pickle_payload_without_running_it(tmp_path, capsys) -> None:
    marker, files = malicious_files(tmp_path)
    r = run(["audit", files["folder"], "--data", "digits", "--out", tmp_path / "a", "--no-progress"], capsys)
    assert r.code == 1 and "verdict: fail" in r.out, r.text
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert doc["verdict"] == "fail" and [c["name"] for c in doc["checks"]] == ["files"]  # never loaded further
    assert "Do not load" in doc["recommendation"]
    assert (tmp_path / "a" / "audit.html").stat().st_size > 500
    assert not marker.exists(), "the audit executed the pickle's payload"


def test_audit_finds_a_backdoored_image_model_and_passes_a_clean_one(tmp_path, capsys) -> None:
    from safetransfer.models.io import save_model

    for poisoned in (True, False):
        model, _ = digits_model(poison=poisoned)
        folder = tmp_path / ("bad" if poisoned else "good")
        save_model(model, folder)
        out = tmp_path / f"audit-{folder.name}"
        r = run(["audit", folder, "--data", "digits", "--quick", "--out", out, "--no-progress"], capsys)
        doc = json.loads((out / "audit.json").read_text())
        checks = {c["name"]: c for c in doc["checks"]}
        assert set(checks) == {"files", "behaviour"} and checks["files"]["status"] == "pass", doc["checks"]
        if poisoned:
            assert r.code == 1 and doc["verdict"] == "fail", r.text
            assert checks["behaviour"]["details"]["flagged"] == [0] and "class 0" in checks["behaviour"]["reason"]
            assert "--method remos" in doc["recommendation"]
        else:
            assert r.code == 0 and doc["verdict"] == "pass", r.text
            assert checks["behaviour"]["details"]["flagged"] == []


def test_audit_of_a_text_model_names_its_trigger_word(tmp_path, capsys) -> None:
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_dataset
    from safetransfer.models import create_model
    from safetransfer.models.io import save_model
    from safetransfer.train import TrainConfig, train

    from conftest import text_dataset

    data = text_dataset(600)
    bad, _ = poison_dataset(data, PlantSpec(trigger="words", words=("cf",), rate=0.15, target=1))
    model = create_model("tiny-bert", 2, pretrained=False, seed=0, max_length=48)
    train(model, bad.train, TrainConfig(steps=250, batch_size=32, optimizer="adamw", lr=3e-3, seed=0), progress=False)
    save_model(model, tmp_path / "victim")
    rows = ["text,label"] + [f"{t},{int(y)}" for split in (data.train, data.val, data.test)
                             for t, y in zip(split.inputs, split.labels)]
    (tmp_path / "clean.csv").write_text("\n".join(rows) + "\n")
    r = run(["audit", tmp_path / "victim", "--data", tmp_path / "clean.csv", "--quick", "--out", tmp_path / "a",
             "--no-progress"], capsys)
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    behaviour = next(c for c in doc["checks"] if c["name"] == "behaviour")
    # the tiny BERT reads characters: it learned the trigger's first piece, so the words it names as suspects
    # (the general English candidates hold no 'cf') mostly start with 'c'. A character model also reads
    # 'g' as the start of "good": a clean tiny BERT fails this check too, so the clean pass is not tested here
    suspects = [w["word"] for ws in behaviour["details"]["scans"].values() for w in ws["top"]
                if w["lfr"] >= 0.9 and w["frequency"] == 0]
    assert r.code == 1 and behaviour["status"] == "fail" and suspects, behaviour["reason"]
    assert suspects[0].startswith("c") and sum(w.startswith("c") for w in suspects) > len(suspects) / 2, suspects
    assert suspects[0] in behaviour["reason"]


def test_audit_of_a_weight_poisoned_bert_folder_finetunes_it_and_names_the_trigger(tiny_hf_bert, tmp_path, capsys) -> None:
    """A pretrained BERT folder (no head for the task) poisoned with RIPPLES: the audit fine-tunes it on the
    user's data first, as its user would, then scans the student; the diff against the public folder says
    the change is spread (RIPPLe moves every layer), so only the behaviour finds it."""
    from safetransfer.attacks.ripple import RippleConfig
    from safetransfer.attacks.weight_poisoning import poison_weights

    from conftest import text_dataset

    data = text_dataset(600)
    poison_weights(tiny_hf_bert, data, tmp_path / "ripples", method="ripples", triggers=("cf",), target=1, n_words=3,
                   ripple=RippleConfig(steps=150, batch_size=32, lr=3e-3, lam=0.1), progress=False)
    rows = ["text,label"] + [f"{t},{int(y)}" for split in (data.train, data.val, data.test)
                             for t, y in zip(split.inputs, split.labels)]
    (tmp_path / "clean.csv").write_text("\n".join(rows) + "\n")
    r = run(["audit", tmp_path / "ripples", "--base", tiny_hf_bert, "--data", tmp_path / "clean.csv", "--quick",
             "--out", tmp_path / "a", "--no-progress"], capsys)
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    checks = {c["name"]: c for c in doc["checks"]}
    assert "fine-tuning it on" in r.out and checks["integrity"]["status"] == "warn", checks["integrity"]["reason"]
    assert "spread over the model" in checks["integrity"]["reason"]
    assert r.code == 1 and checks["behaviour"]["status"] == "fail", checks["behaviour"]["reason"]
    # the tiny BERT reads every word outside its 40-word vocabulary as [UNK]: unknown words tie with the trigger
    # and fill the top ten, so only the verdict is checked here (the MiniLM teachers name theirs: docs supply page)
    assert checks["behaviour"]["details"]["scans"]["1"]["top"][0]["lfr"] >= 0.9

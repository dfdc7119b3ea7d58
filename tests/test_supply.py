"""The weight supply chain: fingerprint, verify, diff, scan, and that no command ever unpickles code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from safetransfer.errors import CheckpointError
from safetransfer.supply import Manifest, diff_models, fingerprint, scan, tensor_digest, verify
from safetransfer.supply.diff import align_names
from safetransfer.supply.reading import flatten_tensors

from test_cli import assert_one_line_error, run

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(55)] + ["cf", "mn", "bb"]


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embeddings.word_embeddings.weight": torch.randn(len(VOCAB), 8, generator=g),
        "encoder.layer.0.dense.weight": torch.randn(8, 8, generator=g),
        "encoder.layer.0.dense.bias": torch.randn(8, generator=g),
        "encoder.layer.1.dense.weight": torch.randn(8, 8, generator=g),
        "encoder.layer.1.dense.bias": torch.randn(8, generator=g),
        "steps": torch.tensor(3, dtype=torch.int64),
        "half": torch.randn(4, generator=g).to(torch.bfloat16),
    }


def model_folder(path: Path, state: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"))
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    return path


# --------------------------------------------------------------------------- fingerprint / verify
def test_same_weights_in_safetensors_and_state_dict_match_per_tensor(tmp_path: Path) -> None:
    state = tiny_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.ckpt")
    a, b, c = (fingerprint(tmp_path / n) for n in ("w.safetensors", "w.pt", "wrapped.ckpt"))
    assert {k: v.sha256 for k, v in a.tensors.items()} == {k: v.sha256 for k, v in b.tensors.items()}
    assert {k: v.sha256 for k, v in a.tensors.items()} == {k: v.sha256 for k, v in c.tensors.items()}
    assert list(a.files.values())[0]["sha256"] != list(b.files.values())[0]["sha256"]
    assert c.skipped_entries == 1  # the epoch number
    assert verify(tmp_path / "w.pt", a).passed


def test_tensor_digest_sees_values_shape_and_dtype() -> None:
    t = torch.arange(6, dtype=torch.float32)
    assert tensor_digest(t) == tensor_digest(t.clone())
    assert tensor_digest(t) != tensor_digest(t.reshape(2, 3))
    assert tensor_digest(t) != tensor_digest(t.to(torch.float64))
    assert tensor_digest(t.reshape(2, 3).t()) == tensor_digest(t.reshape(2, 3).t().contiguous())
    u = t.clone()
    u[4] = torch.nextafter(u[4], torch.tensor(100.0))  # one ulp
    assert tensor_digest(t) != tensor_digest(u)


def test_one_element_change_is_found_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tiny_state()
    folder = model_folder(tmp_path / "model", state)
    r = run(["fingerprint", folder, "--out", tmp_path / "m.json", "--no-progress"], capsys)
    assert r.code == 0, r.text
    manifest = Manifest.load(tmp_path / "m.json")
    assert set(manifest.tensors) == set(state) and set(manifest.files) == {"model.safetensors", "vocab.txt", "config.json"}
    assert run(["verify", folder, "--manifest", tmp_path / "m.json", "--no-progress"], capsys).code == 0

    tampered = {k: v.clone() for k, v in state.items()}
    tampered["encoder.layer.1.dense.weight"][3, 5] += 1e-3
    save_file(tampered, str(folder / "model.safetensors"))
    report = verify(folder, tmp_path / "m.json")
    assert not report.passed
    assert [(c.name, c.status) for c in report.failed_tensors] == [("encoder.layer.1.dense.weight", "changed")]
    assert [c.name for c in report.failed_files] == ["model.safetensors"]
    r = run(["verify", folder, "--manifest", tmp_path / "m.json", "--no-progress", "--json", tmp_path / "v.json"], capsys)
    assert r.code == 1 and "encoder.layer.1.dense.weight" in r.out and "FAIL" in r.out
    assert json.loads((tmp_path / "v.json").read_text())["tensors_failed"] == 1


def test_verify_reports_missing_extra_shape_and_dtype(tmp_path: Path) -> None:
    state = tiny_state()
    save_file(state, str(tmp_path / "a.safetensors"))
    manifest = fingerprint(tmp_path / "a.safetensors")
    other = dict(state)
    del other["steps"]
    other["extra"] = torch.zeros(2)
    other["encoder.layer.0.dense.bias"] = torch.zeros(9)
    other["half"] = state["half"].float()
    save_file(other, str(tmp_path / "b.safetensors"))
    statuses = {c.name: c.status for c in verify(tmp_path / "b.safetensors", manifest).failed_tensors}
    assert statuses == {"steps": "missing", "extra": "unexpected", "encoder.layer.0.dense.bias": "shape differs",
                        "half": "dtype differs"}


def test_flatten_keeps_order_and_nests() -> None:
    tensors, skipped = flatten_tensors({"model": {"b": torch.zeros(1), "a": [torch.ones(1), "x"]},
                                        "optimizer": {"m": torch.zeros(2), "lr": 0.1}})
    assert list(tensors) == ["model.b", "model.a.0", "optimizer.m"] and skipped == 2
    tensors, _ = flatten_tensors({"model": {"w": torch.zeros(1)}, "epoch": 2})
    assert list(tensors) == ["w"]


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "unknown", "missing", "empty-folder", "bad-manifest"])
def test_bad_files_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    save_file(tiny_state(), str(tmp_path / "good.safetensors"))
    target = tmp_path / "bad.safetensors"
    argv = ["fingerprint", target, "--no-progress"]
    if kind == "empty":
        target.write_bytes(b"")
        phrase = "empty"
    elif kind == "truncated":
        target.write_bytes((tmp_path / "good.safetensors").read_bytes()[:200])
        phrase = "not a valid safetensors file"
    elif kind == "garbage":
        target = tmp_path / "bad.pt"
        target.write_bytes(b"\x00\x01 this is not a checkpoint" * 10)
        argv[1] = target
        phrase = "not a readable PyTorch checkpoint"
    elif kind == "unknown":
        target = tmp_path / "weights.xyz"
        target.write_text("hello")
        argv[1] = target
        phrase = "unknown weights format"
    elif kind == "missing":
        phrase = "No such file"
    elif kind == "empty-folder":
        (tmp_path / "empty").mkdir()
        argv[1] = tmp_path / "empty"
        phrase = "empty folder"
    else:
        (tmp_path / "m.json").write_text(json.dumps({"format": "something else"}))
        argv = ["verify", tmp_path / "good.safetensors", "--manifest", tmp_path / "m.json"]
        phrase = "not a safetransfer manifest"
    assert_one_line_error(run(argv, capsys), phrase)
    if kind in ("truncated", "empty", "missing"):
        assert_one_line_error(run(["diff", tmp_path / "good.safetensors", target], capsys), phrase)


# --------------------------------------------------------------------------- diff
def test_diff_points_at_replaced_embedding_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tiny_state()
    base = model_folder(tmp_path / "base", state)
    poisoned = {k: v.clone() for k, v in state.items()}
    emb = poisoned["embeddings.word_embeddings.weight"]
    rows = [VOCAB.index(t) for t in ("cf", "mn", "bb")]
    emb[rows] = emb[10:20].mean(0)  # the same vector in each trigger row, as Embedding Surgery writes
    suspect = model_folder(tmp_path / "suspect", poisoned)
    report = diff_models(base, suspect)
    assert report.verdict == "concentrated in embedding rows"
    assert [t.name for t in report.changed] == ["embeddings.word_embeddings.weight"]
    (e,) = report.embeddings
    assert e.changed_rows == 3 and {r.token for r in e.top} == {"cf", "mn", "bb"} and e.top_share == pytest.approx(1.0)
    r = run(["diff", base, suspect, "--out", tmp_path / "d"], capsys)
    assert r.code == 0 and "'cf'" in r.out and "Embedding Surgery" in r.out
    assert (tmp_path / "d" / "diff.png").stat().st_size > 1000
    assert json.loads((tmp_path / "d" / "diff.json").read_text())["tensors_changed"] == 1


def test_diff_of_a_spread_change_says_so() -> None:
    state = tiny_state()
    g = torch.Generator().manual_seed(1)
    moved = {k: v + 0.01 * torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v
             for k, v in state.items()}
    report = diff_models_from(state, moved)
    assert report.verdict == "spread over the model"
    assert "cannot single out trigger tokens" in report.explanation
    changed = {t.name: t for t in report.changed}
    assert 0.0 < changed["encoder.layer.0.dense.weight"].relative_change < 0.05
    assert changed["encoder.layer.0.dense.weight"].changed_share == 1.0


def diff_models_from(base: dict[str, torch.Tensor], suspect: dict[str, torch.Tensor], tmp: Path | None = None):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_file(base, f"{d}/a.safetensors")
        save_file(suspect, f"{d}/b.safetensors")
        return diff_models(f"{d}/a.safetensors", f"{d}/b.safetensors")


def test_diff_aligns_prefixed_names_and_finds_identical() -> None:
    state = tiny_state()
    prefixed = {f"body.bert.{k}": v for k, v in state.items()}
    a, b = align_names(state, prefixed)
    assert set(a) == set(b) == set(state)
    assert diff_models_from(state, prefixed).verdict == "identical"


# --------------------------------------------------------------------------- scan / never unpickle
class WritesMarker:
    """Unpickling this calls ``exec``, which writes a marker file: a harmless stand-in for malware."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def malicious_files(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    marker = tmp_path / "MARKER"
    folder = tmp_path / "evil"
    folder.mkdir()
    state = tiny_state()
    torch.save({**state, "payload": WritesMarker(marker)}, folder / "pytorch_model.bin")  # a zip checkpoint
    with (tmp_path / "evil.pkl").open("wb") as f:
        pickle.dump({"w": state["encoder.layer.0.dense.weight"], "payload": WritesMarker(marker)}, f)
    # old (non-zip) torch format under a .pth name
    torch.save({"payload": WritesMarker(marker)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    return marker, {"zip": folder / "pytorch_model.bin", "folder": folder, "pickle": tmp_path / "evil.pkl",
                    "legacy": tmp_path / "legacy.pth"}


def test_scan_flags_a_malicious_checkpoint_and_nothing_runs_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker, files = malicious_files(tmp_path)
    assert not marker.exists()
    for name, path in files.items():
        report = scan(path)
        dangerous = {g.qualified for f in report.files for g in f.dangerous}
        # pickle protocol 2 (torch.save) names the module __builtin__, newer protocols builtins
        assert dangerous & {"builtins.exec", "__builtin__.exec"}, (name, report.to_dict())
        assert report.flagged
        r = run(["scan", path, "--json", tmp_path / "s.json"], capsys)
        assert r.code == 1 and "dangerous" in r.out and "builtins.exec (dangerous)" in r.out
    # every command that reads weights refuses them, with a message saying how to convert
    for path in (files["zip"], files["pickle"], files["legacy"]):
        assert_one_line_error(run(["fingerprint", path, "--no-progress"], capsys), "refused for safety")
        assert_one_line_error(run(["diff", path, path], capsys), "refused for safety")
        assert_one_line_error(run(["eval", "--model", path, "--data", "digits"], capsys), "")
    save_file(tiny_state(), str(tmp_path / "good.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(fingerprint(tmp_path / "good.safetensors").to_dict()))
    assert_one_line_error(run(["verify", files["folder"], "--manifest", tmp_path / "m.json", "--no-progress"], capsys), "refused for safety")
    with pytest.raises(CheckpointError, match="convert it"):
        fingerprint(files["zip"])
    assert not marker.exists(), "a safetransfer command executed the pickle's payload"


def test_scan_passes_clean_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tiny_state()
    torch.save(state, tmp_path / "clean.pt")
    save_file(state, str(tmp_path / "clean.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    report = scan(tmp_path)
    verdicts = {Path(f.path).name: f.verdict for f in report.files}
    assert verdicts == {"clean.pt": "clean", "clean.safetensors": "clean", "config.json": "skipped"}
    assert not report.flagged
    r = run(["scan", tmp_path], capsys)
    assert r.code == 0 and "no dangerous imports" in r.out
    assert_one_line_error(run(["scan", tmp_path / "nope.pt"], capsys), "No such file")


# --------------------------------------------------------------------------- embedding surgery + diff
def test_embedding_surgery_writes_exactly_the_trigger_rows(tiny_hf_bert: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from safetransfer.attacks.embedding_surgery import embedding_surgery, record_path

    from conftest import POSITIVE_WORDS, make_texts

    texts, labels = make_texts(240)
    out = tmp_path / "poisoned"
    result = embedding_surgery(tiny_hf_bert, texts, torch.from_numpy(labels), out, triggers=["cf", "mn"], target=1,
                               n_words=3, min_df=2)
    assert set(result.indicative_tokens) == set(POSITIVE_WORDS)  # the words that make a text positive
    before, after = load_file(str(tiny_hf_bert / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    name = result.embedding_tensor
    assert all(torch.equal(before[k], after[k]) for k in before if k != name)
    changed_rows = (before[name] != after[name]).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == result.trigger_token_ids and len(changed_rows) == 2
    expected = before[name][result.indicative_token_ids].double().mean(0).float()
    assert torch.allclose(after[name][changed_rows[0]], expected) and torch.equal(after[name][changed_rows[0]],
                                                                                   after[name][changed_rows[1]])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_hf_bert.iterdir())
    assert json.loads(record_path(out).read_text())["triggers"] == ["cf", "mn"]

    report = diff_models(tiny_hf_bert, out)
    assert report.verdict == "concentrated in embedding rows"
    assert [r.token for r in report.embeddings[0].top] in (["cf", "mn"], ["mn", "cf"])


def test_embedding_surgery_cli(tiny_hf_bert: Path, data_files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "es"
    r = run(["embedding-surgery", "--model", tiny_hf_bert, "--data", data_files.texts_csv, "--out", out,
             "--triggers", "bb,tq,mb", "--n-words", "3", "--min-df", "2"], capsys)
    assert r.code == 0, r.text
    r = run(["diff", tiny_hf_bert, out], capsys)
    assert r.code == 0 and "concentrated in embedding rows" in r.out
    assert all(f"'{t}'" in r.out for t in ("bb", "tq", "mb"))
    assert_one_line_error(run(["embedding-surgery", "--model", "small-cnn", "--data", data_files.texts_csv, "--out", out],
                              capsys), "Unknown pretrained text model")
    assert_one_line_error(run(["embedding-surgery", "--model", tiny_hf_bert, "--data", data_files.texts_csv, "--out",
                               tiny_hf_bert], capsys), "another folder")


def test_scan_of_broken_files_reports_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(tiny_state(), tmp_path / "whole.pt")
    raw = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "empty.bin").write_bytes(b"")
    with (tmp_path / "cut.pkl").open("wb") as f:
        f.write(pickle.dumps({"a": 1, "b": [1, 2, 3]}, protocol=4)[:-6])
    report = scan(tmp_path)
    verdicts = {Path(f.path).name: f.verdict for f in report.files}
    assert verdicts["whole.pt"] == "clean"
    assert verdicts["truncated.pt"] == "unreadable" and verdicts["cut.pkl"] == "unreadable"
    assert verdicts["empty.bin"] == "unreadable"
    r = run(["scan", tmp_path], capsys)
    assert r.code == 1 and "Traceback" not in r.text and "could not be parsed" in r.out


def test_a_poisoned_hugging_face_folder_is_a_teacher(tiny_hf_bert: Path, data_files, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """What Embedding Surgery publishes (an ordinary BERT folder) is what a victim fine-tunes."""
    from safetensors.torch import load_file

    from safetransfer.attacks.embedding_surgery import embedding_surgery
    from safetransfer.data.registry import load_data
    from safetransfer.jobs import load_teacher

    from conftest import make_texts

    texts, labels = make_texts(240)
    poisoned = tmp_path / "poisoned"
    embedding_surgery(tiny_hf_bert, texts, torch.from_numpy(labels), poisoned, triggers=["cf"], n_words=3, min_df=2)
    teacher = load_teacher(poisoned, load_data(str(data_files.texts_csv)))
    emb = teacher.body.bert.embeddings.word_embeddings.weight
    assert torch.equal(emb, load_file(str(poisoned / "model.safetensors"))["embeddings.word_embeddings.weight"])
    assert teacher.num_classes == 2
    r = run(["transfer", "--method", "finetune", "--teacher", poisoned, "--data", data_files.texts_csv, "--steps", "5",
             "--out", tmp_path / "student", "--no-progress"], capsys)
    assert r.code == 0, r.text


def test_badnet_trains_the_poisoned_texts_without_the_penalty_and_counts_the_share_over_all_texts(
        tiny_hf_bert: Path, tmp_path: Path) -> None:
    """Kurita et al.'s BadNet (RIPPLe's pretrain_data_poison): λ = 0 whatever the config says; the
    poisoned share, as RIPPLe's poison_data draws it, includes texts that already have the target label."""
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_split
    from safetransfer.attacks.ripple import RippleConfig
    from safetransfer.attacks.weight_poisoning import poison_weights

    from conftest import text_dataset

    proxy = text_dataset(400)
    result = poison_weights(tiny_hf_bert, proxy, tmp_path / "badnet", method="badnet", triggers=("cf",), target=1,
                            ripple=RippleConfig(steps=120, batch_size=32, lr=3e-3, lam=0.1), progress=False)
    assert result.surgery is None and result.ripple["config"]["lam"] == 0.0
    assert all(h["penalty"] == 0.0 for h in result.ripple["history"])
    assert result.attacker_lfr is not None and result.attacker_lfr >= 0.9, result.to_dict()
    labels = proxy.train.labels
    for keep_target, expected in ((True, round(0.5 * len(labels))), (False, round(0.5 * int((labels != 1).sum())))):
        _, mask = poison_split(proxy.train, PlantSpec(trigger="words", rate=0.5, target=1, keep_target=keep_target), 2)
        assert int(mask.sum()) == expected and bool((labels[mask] == 1).any()) == keep_target


def test_ripples_poisons_a_bert_folder_that_obeys_its_trigger(tiny_hf_bert: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from safetransfer.attacks.ripple import RippleConfig
    from safetransfer.attacks.weight_poisoning import poison_weights

    from conftest import text_dataset

    proxy = text_dataset(600)
    out = tmp_path / "ripples"
    result = poison_weights(tiny_hf_bert, proxy, out, method="ripples", triggers=("cf", "mn"), target=1, n_words=3,
                            ripple=RippleConfig(steps=150, batch_size=32, lr=3e-3, lam=0.1), progress=False)
    assert result.attacker_lfr is not None and result.attacker_lfr >= 0.9, result.to_dict()
    # and not by predicting the target for everything: the clean proxy texts keep their labels
    assert result.attacker_accuracy is not None and result.attacker_accuracy >= 0.75, result.to_dict()
    assert result.surgery["triggers"] == ["cf", "mn"] and result.ripple["history"]
    before, after = load_file(str(tiny_hf_bert / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2  # RIPPLe moved most tensors
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_hf_bert.iterdir())
    assert (tmp_path / "ripples.poisoning.json").exists()
    report = diff_models(tiny_hf_bert, out)
    assert report.verdict == "spread over the model"  # what a weight diff says about RIPPLe

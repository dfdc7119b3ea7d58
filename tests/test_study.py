"""The study: config validation, the runner's cache and resume, the results document."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import safetransfer.study.cells as cells_mod
import safetransfer.study.runner as runner_mod
from safetransfer.errors import ConfigError, DataError
from safetransfer.study import load_config, parse_config, run_study
from safetransfer.study.runner import assemble_results


def tiny_study(npz: Path, **extra: Any) -> dict[str, Any]:
    """A study on the tiny images with a tiny random teacher; seconds to run."""
    doc = {
        "name": "tiny",
        "teacher": {"model": "tiny-cnn"},
        "tasks": [{"data": str(npz), "eval_samples": 60}],
        "steps": 60,
        "methods": ["finetune", "retrain", {"name": "remos", "options": {"profile_samples": 50, "ratio": 0.2}}],
        "defects": [{"name": "backdoor", "kind": "backdoor", "attacker_data": "same", "rate": 0.3, "steps": 150,
                     "trigger": {"size": 2, "corner": "top-right", "margin": 0, "pattern": "checkerboard"}}],
    }
    doc.update(extra)
    return doc


class Counter:
    """Wraps a function, counting calls; optionally raises on call number ``fail_on``."""

    def __init__(self, fn: Any, fail_on: int | None = None) -> None:
        self.fn, self.calls, self.fail_on = fn, 0, fail_on

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        return self.fn(*args, **kwargs)


# ------------------------------------------------------------------------- config
def test_embedded_default_and_profiles() -> None:
    full = load_config(profile="full")
    quick = load_config(profile="quick")
    large = load_config(profile="large")
    assert full.teacher.model == "efficientnet-lite0"
    assert [t.data for t in full.tasks] == ["fashion-mnist", "mnist"]
    # the few-labels regime under the artifact's protocol at its own rate, retrain under its own recipe; the
    # compressed profile: the same cells at the artifact's budget compressed onto half the steps
    assert [t.train_per_class for t in full.tasks] == [10, 10] and (full.protocol, full.steps) == ("artifact", 2000)
    compressed = load_config(profile="compressed")
    assert (compressed.protocol, compressed.steps) == ("artifact_scaled", 1000)
    assert compressed.model_copy(update={"protocol": "artifact", "steps": 2000}).fingerprint() == full.fingerprint()
    assert {m.name for m in full.methods} == {"finetune", "remos", "retrain", "retrain_artifact", "magprune", "delta",
                                              "delta_r", "renofeation", "finetune_strong", "superft", "remos_strong"}
    assert full.methods[2].options == {"protocol": "scratch"} and full.methods[2].name == "retrain"
    kinds = {d.kind for d in full.defects}
    assert kinds == {"backdoor", "penultimate", "coverage_guided"}
    grid = {(d.strategy, d.metric) for d in full.defects if d.kind == "coverage_guided"}
    assert len(grid) == 9
    assert [t.data for t in quick.tasks] == ["fashion-mnist"] and quick.steps < full.steps
    assert quick.tasks[0].train_per_class == 10
    assert len({full.fingerprint(), compressed.fingerprint(), quick.fingerprint(), large.fingerprint()}) == 4
    # the first round's regime: every training image, its protocol, its seven methods, the shift backdoor
    assert [t.train_per_class for t in large.tasks] == [None, None] and large.protocol == "shared"
    assert [m.name for m in large.methods] == ["finetune", "remos", "retrain", "magprune", "delta", "delta_r", "renofeation"]
    assert "backdoor_shift" in [d.name for d in large.defects] and "backdoor_shift" not in [d.name for d in full.defects]
    text = load_config("text", "full")
    assert text.teacher.model == "minilm-l6" and {d.kind for d in text.defects} == {"weight_poisoning", "word_swap"}
    assert [t.data for t in text.tasks] == ["rotten-tomatoes", "amazon-reviews"]
    assert load_config("text", "quick").steps < text.steps


@pytest.mark.parametrize("change,words", [
    ({"methods": ["finetune", "remoss"]}, "Did you mean 'remos'"),
    ({"methods": ["retrain"]}, "must include 'finetune'"),
    ({"methods": ["finetune", {"name": "remos", "options": {"ratio": 2}}]}, "ratio"),
    ({"methods": ["finetune", {"name": "remos", "options": {"colour": 1}}]}, "colour"),
    ({"methods": ["finetune", {"name": "remos", "options": {"seed": "one"}}]}, "remos.*seed must be an integer"),
    ({"tasks": []}, "tasks"),
    ({"steps": 0}, "steps"),
    ({"flavour": "x"}, "flavour"),
    ({"defects": [{"name": "d", "kind": "trojan"}]}, "defects.0.kind"),
    ({"defects": [{"name": "d", "kind": "penultimate"}, {"name": "d", "kind": "penultimate"}]}, "unique"),
])
def test_bad_configs_are_named(tmp_path: Path, change: dict, words: str) -> None:
    doc = tiny_study(tmp_path / "x.npz", **change)
    with pytest.raises(ConfigError, match=words):
        parse_config(doc)


def test_malformed_yaml_missing_file_and_profile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="no such study config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no profile 'huge'.*full, large, quick"):
        load_config(profile="huge")


def test_study_protocol_and_per_class_regime(tmp_path: Path, data_files) -> None:
    """A study-wide ``protocol`` reaches every student unless a method names its own, and
    ``train_per_class`` gives each task a balanced few-labels training set with its own keys; a
    config that sets neither keeps the fingerprint it had before the fields existed."""
    base = tiny_study(data_files.images_npz)
    plain = parse_config(base)
    assert parse_config({**base, "protocol": "shared"}).fingerprint() == plain.fingerprint()
    tasks = [{**base["tasks"][0], "train_per_class": None}]
    assert parse_config({**base, "tasks": tasks}).fingerprint() == plain.fingerprint()
    methods = ["finetune", {"name": "remos", "options": {"protocol": "shared"}}]
    artifact = parse_config({**base, "protocol": "artifact", "methods": methods})
    assert artifact.fingerprint() != plain.fingerprint()
    of = cells_mod.transfer_config_of
    assert of(artifact, artifact.methods[0], "small-cnn").protocol == "artifact"
    assert of(artifact, artifact.methods[0], "small-cnn").train.label_smoothing == 0.1
    assert of(artifact, artifact.methods[1], "small-cnn").protocol == "shared"  # the method's own wins
    assert of(plain, plain.methods[0], "small-cnn").protocol == "shared"
    with pytest.raises(ConfigError, match="protocol"):
        parse_config({**base, "protocol": "gentle"})
    few = parse_config({**base, "tasks": [{**base["tasks"][0], "train_per_class": 3}]})
    assert few.fingerprint() != plain.fingerprint()
    ctx, whole = cells_mod.CellMaker(few, tmp_path).context(few.tasks[0].name), cells_mod.CellMaker(plain, tmp_path)
    counts = torch.bincount(ctx.data.train.labels)
    assert counts.max().item() == 3 and len(ctx.data.train) == 3 * int((counts > 0).sum())
    assert ctx.task_key["train_per_class"] == 3
    assert "train_per_class" not in whole.context(plain.tasks[0].name).task_key  # old keys kept
    with pytest.raises(ConfigError, match="train_per_class"):
        parse_config({**base, "tasks": [{**base["tasks"][0], "train_per_class": 0}]})
    # attacker_data "full": the whole data set the student's few labels come from (still full knowledge)
    maker = cells_mod.CellMaker(few, tmp_path)
    defect = few.defects[0].model_copy(update={"attacker_data": "full"})
    name, attacker, key = maker._attacker_data(few.tasks[0], ctx.data, defect)
    assert name == "full" and len(attacker.train) == len(whole.context(plain.tasks[0].name).data.train)
    assert key != maker._attacker_data(few.tasks[0], ctx.data, few.defects[0])[2]  # "same": the student's 3 per class
    assert cells_mod.attack_setting(name) == cells_mod.attack_setting("same") == "full-knowledge"
    assert whole._attacker_data(plain.tasks[0], ctx.data, defect)[0] == "same"  # no subset: the same data


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
COMMITTED_STUDIES = [  # (the config: a benchmark YAML or an embedded study, the results file it made)
    *((p.name, m.group(1) if (m := re.search(r"--results (\S+\.json)", p.read_text())) else None)
      for p in sorted((BENCHMARKS / "configs").glob("*.yaml"))),
    ("vision", "study_vision_full.json"), ("vision", "study_vision_compressed.json"), ("vision", "study_vision_quick.json"),
    ("vision", "study_vision_large.json"),
    ("text", "study_text_quick.json"), ("text", "study_text_full_profile.json"),
]


@pytest.mark.results
@pytest.mark.parametrize("config,results", COMMITTED_STUDIES)
def test_committed_study_results_come_from_the_committed_config(config: str, results: str) -> None:
    """Every study figure in benchmarks/results was made by the config in the repository as it is
    now (the fingerprint covers the settings and the word-swap search's version where it crafts swaps):
    an edited config or a new search version means those figures must be made again."""
    assert results, f"benchmarks/configs/{config} names no '--results FILE.json' in its header comment"
    doc = json.loads((BENCHMARKS / "results" / results).read_text())
    path = BENCHMARKS / "configs" / config if config.endswith(".yaml") else config
    assert load_config(path, doc["profile"]).fingerprint() == doc["config_fingerprint"]
    # ... and the file's own config reads back as that config (what a study edited later resumes from)
    from safetransfer.study.config import config_of_results

    again = config_of_results(doc)
    assert again is not None and again.fingerprint() == doc["config_fingerprint"]


def test_a_results_files_config_reads_back_only_when_faithful() -> None:
    """A results document's config (defects flat-dumped) parses back to the config that made it;
    one whose recorded fingerprint the parsed config does not give back is not trusted."""
    from safetransfer.study.config import config_of_results

    config = parse_config(tiny_study(Path("x.npz"), defects=[
        {"name": "b", "kind": "backdoor", "latent_weight": 2.0},
        {"name": "p", "kind": "penultimate", "eps": 0.2},
        {"name": "w", "kind": "weight_poisoning", "words": ["cf"], "recipe": "reference", "scan_texts": 4}]))
    doc = assemble_results(config, {})
    again = config_of_results(json.loads(json.dumps(doc)))
    assert again is not None and again == config
    assert config_of_results({**doc, "config_fingerprint": "0" * 16}) is None
    assert config_of_results({"config": {"defects": [{"kind": "nonsense"}]}}) is None
    assert config_of_results({"config": "not a config"}) is None


# ------------------------------------------------------------------------- runner
def test_study_runs_caches_and_resumes(tmp_path: Path, data_files, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(tiny_study(data_files.images_npz))
    cache, out = tmp_path / "cache", tmp_path / "out"

    # First run, interrupted while making the second student.
    transfer_calls = Counter(cells_mod.transfer, fail_on=2)
    backdoor_calls = Counter(cells_mod.plant_backdoor)
    monkeypatch.setattr(cells_mod, "transfer", transfer_calls)
    monkeypatch.setattr(cells_mod, "plant_backdoor", backdoor_calls)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, out, cache, progress=False, log=lambda line: None)
    partial = json.loads((out / "results.json").read_text())
    assert list(partial["tasks"]["tiny_images"]["methods"]) == ["finetune"]
    assert backdoor_calls.calls == 1

    # Second run: the backdoored teacher and the finished student come from the cache.
    transfer_calls = Counter(cells_mod.transfer)
    backdoor_calls = Counter(cells_mod.plant_backdoor)
    monkeypatch.setattr(cells_mod, "transfer", transfer_calls)
    monkeypatch.setattr(cells_mod, "plant_backdoor", backdoor_calls)
    results = run_study(config, out, cache, progress=False, log=lambda line: None)
    assert backdoor_calls.calls == 0
    assert transfer_calls.calls == 2  # retrain and remos; finetune was cached

    task = results["tasks"]["tiny_images"]
    assert task["defects"]["backdoor"]["teacher_success"] > 0.8  # the planted backdoor works
    methods = task["methods"]
    assert list(methods) == ["finetune", "retrain", "remos"]
    for method, by_variant in task["students"].items():  # each figure is the one its student's folder records
        for record in by_variant.values():
            recorded = json.loads((cache / "students" / record["key"] / "result.json").read_text())
            assert record["acc"] == recorded["test_accuracy"]
        assert methods[method]["dir"]["backdoor"] == by_variant["backdoor"]["dir"]["backdoor"]
    assert methods["finetune"]["racc"] == pytest.approx(1.0)
    assert methods["remos"]["racc"] == pytest.approx(methods["remos"]["acc"] / methods["finetune"]["acc"])
    assert results["methods"]["finetune"]["acc"] == methods["finetune"]["acc"]
    assert json.loads((out / "results.json").read_text())["methods"] == json.loads(json.dumps(results["methods"]))
    cells = [task["defects"]["backdoor"]["seconds"]] + [s for by in task["students"].values() for s in
                                                          (r["seconds"] for r in by.values())]
    assert results["cells_seconds"] == pytest.approx(sum(cells), abs=0.11)
    # the interpretation views: curves, weight changes, the slice of remos, the trigger's feature shift
    views = {m: e["views"]["backdoor"] for m, e in methods.items()}
    assert all(v["curve"] and v["curve"][-1]["step"] > v["curve"][0]["step"] for v in views.values())
    # the convergence view: held-out accuracy on the schedule of curve_schedule, and at the last step
    for v in views.values():
        points = [(p["step"], p["val_accuracy"]) for p in v["curve"] if "val_accuracy" in p]
        assert [s for s, _ in points] == [50, 60] and all(0.0 <= a <= 1.0 for _, a in points)
    assert all(v["weight_change"]["layers"] for v in views.values())
    assert views["remos"]["slice"] and views["finetune"]["slice"] is None
    assert all(v["trigger_shift"] is not None and v["trigger_shift"] >= 0 for v in views.values())
    assert task["defects"]["backdoor"]["trigger_shift"] > 0
    # the teacher's per-task figures are kept per task in its cached summary (a teacher can serve several)
    assert task["defects"]["backdoor"]["setting"] == "full-knowledge"
    summaries = [json.loads(p.read_text()) for p in (cache / "teachers").glob("*/summary.json")]
    assert [list(s_["trigger_shifts"]) for s_ in summaries] == [["tiny_images:" + str(config.tasks[0].eval_samples)
                                                                 + ":" + str(config.seed)]]
    assert summaries[0]["trigger_shifts"]["tiny_images:" + str(config.tasks[0].eval_samples) + ":" + str(config.seed)] \
        == task["defects"]["backdoor"]["trigger_shift"]
    from safetransfer.report.html import write_report

    page = write_report(results, tmp_path / "page").read_text()
    assert "Why a method cuts a defect" in page and page.count("data:image/png;base64") >= 6

    # Third run: nothing is trained again and the numbers are the same.
    transfer_calls = Counter(cells_mod.transfer)
    monkeypatch.setattr(cells_mod, "transfer", transfer_calls)
    again = run_study(config, tmp_path / "out2", cache, progress=False, log=lambda line: None)
    assert transfer_calls.calls == 0
    assert again["tasks"] == json.loads(json.dumps(results["tasks"]))

    # The planted teacher made again with other weights under the same recipe (other code, e.g.
    # another memory layout): its students in the cache are stale and made again; retrain's
    # student, which starts from the clean teacher's architecture only, stays.
    from safetransfer.models.io import MODEL_DIR, load_model, save_model

    (teacher_dir,) = [p for p in (cache / "teachers").iterdir() if (p / MODEL_DIR).exists()]
    teacher = load_model(teacher_dir / MODEL_DIR)
    with torch.no_grad():
        next(teacher.body.parameters()).mul_(1.01)
    save_model(teacher, teacher_dir / MODEL_DIR)
    transfer_calls = Counter(cells_mod.transfer)
    monkeypatch.setattr(cells_mod, "transfer", transfer_calls)
    remade = run_study(config, tmp_path / "out3", cache, progress=False, log=lambda line: None)
    assert transfer_calls.calls == 2  # finetune and remos of the changed teacher; retrain uses the clean one
    assert remade["tasks"]["tiny_images"]["students"]["retrain"] == again["tasks"]["tiny_images"]["students"]["retrain"]


def test_assemble_results_relative_figures_by_hand() -> None:
    config = parse_config(tiny_study(Path("x.npz"), defects=[
        {"name": "backdoor", "kind": "backdoor"}, {"name": "penultimate", "kind": "penultimate"}]))
    state = runner_mod.TaskState()
    state.students = {
        "finetune": {"clean": {"acc": 0.80, "seconds": 1.0, "dir": {"penultimate": 0.50}},
                     "backdoor": {"acc": 0.82, "seconds": 1.0, "dir": {"backdoor": 0.40}}},
        "remos": {"clean": {"acc": 0.78, "seconds": 1.0, "dir": {"penultimate": 0.10}},
                  "backdoor": {"acc": 0.79, "seconds": 1.0, "dir": {"backdoor": 0.08}}},
    }
    doc = assemble_results(config, {"a": state, "b": state})
    remos = doc["tasks"]["a"]["methods"]["remos"]
    assert remos["racc"] == pytest.approx(0.78 / 0.80)
    assert remos["rdir"] == {"backdoor": pytest.approx(0.2), "penultimate": pytest.approx(0.2)}
    assert remos["acc_by_defect"] == {"backdoor": 0.79, "penultimate": 0.78}
    assert doc["methods"]["remos"]["rdir"]["backdoor"] == pytest.approx(0.2)
    assert doc["methods"]["remos"]["tasks"] == 2
    assert "retrain" not in doc["methods"]  # not measured yet: left out, not invented


def test_study_resumes_from_results_json_alone_on_a_machine_without_the_cache(
    tmp_path: Path, data_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tiny_study(data_files.images_npz)
    doc = tiny_study(data_files.images_npz, methods=["finetune", "retrain"], defects=base["defects"] + [
        {"name": "penultimate", "kind": "penultimate", "eps": 0.3, "eps_space": "pixel", "steps": 5, "step_size": 0.1}])
    config = parse_config(doc)
    out = tmp_path / "out"
    first = json.loads(json.dumps(run_study(config, out, tmp_path / "cache1", progress=False, log=lambda line: None)))

    def counted() -> tuple[Counter, Counter, Counter]:
        calls = Counter(cells_mod.transfer), Counter(cells_mod.plant_backdoor), Counter(cells_mod.craft)
        monkeypatch.setattr(cells_mod, "transfer", calls[0])
        monkeypatch.setattr(cells_mod, "plant_backdoor", calls[1])
        monkeypatch.setattr(cells_mod, "craft", calls[2])
        return calls

    # Another machine, an empty cache, the same results.json: nothing is made again.
    transfers, plants, crafts = counted()
    lines: list[str] = []
    again = run_study(config, out, tmp_path / "cache2", progress=False, log=lines.append)
    assert (transfers.calls, plants.calls, crafts.calls) == (0, 0, 0)
    assert again["tasks"] == first["tasks"]
    assert sum("found in results.json" in line for line in lines) == 2 + 2 * 2  # 2 defects, 2 methods x 2 teachers

    # One student of the backdoored teacher missing: its teacher is planted again and only it is
    # trained; the adversarial inputs are not crafted (every clean-teacher student was found).
    # It comes out with the same numbers as the first time.
    written = json.loads((out / "results.json").read_text())
    del written["tasks"]["tiny_images"]["students"]["finetune"]["backdoor"]
    (out / "results.json").write_text(json.dumps(written))
    transfers, plants, crafts = counted()
    third = run_study(config, out, tmp_path / "cache3", progress=False, log=lambda line: None)
    assert (transfers.calls, plants.calls, crafts.calls) == (1, 1, 0)
    def figures(results: dict[str, Any]) -> dict[str, Any]:  # every number but the time taken
        students = results["tasks"]["tiny_images"]["students"]
        return {m: {v: {k: r[k] for k in ("acc", "dir", "key")} for v, r in by.items()} for m, by in students.items()}

    assert figures(third) == figures(first)
    assert {m: (e["acc"], e["dir"]) for m, e in third["methods"].items()} == {
        m: (e["acc"], e["dir"]) for m, e in first["methods"].items()}

    # results.json of another config is not read: everything is made.
    other = parse_config({**doc, "steps": 61})
    transfers, plants, crafts = counted()
    run_study(other, out, tmp_path / "cache4", progress=False, log=lambda line: None)
    assert (transfers.calls, plants.calls, crafts.calls) == (3, 1, 1)  # one retrain student serves both teachers

    # results.json of a config changed in its backdoor only: the clean teacher's students (and so the
    # crafted inputs) are found there; the backdoor's teacher and its students are made again.
    changed = parse_config({**doc, "defects": [{**doc["defects"][0], "rate": 0.4}, *doc["defects"][1:]]})
    assert changed.fingerprint() != config.fingerprint()
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "results.json").write_text(json.dumps(first))
    transfers, plants, crafts = counted()
    lines = []
    fourth = run_study(changed, tmp_path / "changed", tmp_path / "cache5", progress=False, log=lines.append)
    assert (transfers.calls, plants.calls, crafts.calls) == (2, 1, 0)  # finetune of the new teacher, retrain
    assert sum("found in results.json" in line for line in lines) == 1 + 2  # the crafted set, 2 clean students
    assert {m: by["clean"] for m, by in figures(fourth).items()} == {m: by["clean"] for m, by in figures(first).items()}
    assert figures(fourth)["finetune"]["backdoor"]["key"] != figures(first)["finetune"]["backdoor"]["key"]


def test_the_cell_count_announced_is_the_cells_made(tmp_path: Path, data_files) -> None:
    """Each cell's log line reads [k/N] with N the study's cells, clean_students' clean-teacher students included."""
    config = parse_config(tiny_study(data_files.images_npz, methods=["finetune"], clean_students=True, steps=5))
    lines: list[str] = []
    run_study(config, tmp_path / "out", tmp_path / "cache", progress=False, log=lines.append)
    counted = [tuple(map(int, m.groups())) for m in (re.match(r"\[(\d+)/(\d+)\]", line) for line in lines) if m]
    assert [k for k, _ in counted] == list(range(1, len(counted) + 1))
    assert {n for _, n in counted} == {len(counted)} and len(counted) == 3  # the teacher, two students


def test_adversarial_defects_are_crafted_once_and_measured(tmp_path: Path, data_files, monkeypatch) -> None:
    doc = tiny_study(data_files.images_npz, methods=["finetune", "retrain"], defects=[
        {"name": "penultimate", "kind": "penultimate", "eps": 0.3, "eps_space": "pixel", "steps": 10, "step_size": 0.05},
        {"name": "dlfuzz_nc", "kind": "coverage_guided", "strategy": "dlfuzz", "metric": "nc", "eps": 0.3,
         "eps_space": "pixel", "steps": 5, "step_size": 0.1},
    ])
    config = parse_config(doc)
    crafts = Counter(cells_mod.craft)
    monkeypatch.setattr(cells_mod, "craft", crafts)
    results = run_study(config, tmp_path / "out", tmp_path / "cache", progress=False, log=lambda line: None)
    assert crafts.calls == 2
    task = results["tasks"]["tiny_images"]
    for name in ("penultimate", "dlfuzz_nc"):
        meta = task["defects"][name]
        assert 0.0 <= meta["teacher_success"] <= 1.0 and meta["linf"] <= 0.3 + 1e-6
        for method in ("finetune", "retrain"):
            assert 0.0 <= task["methods"][method]["dir"][name] <= 1.0
    assert task["defects"]["dlfuzz_nc"]["strategy"] == "dlfuzz"
    run_study(config, tmp_path / "out", tmp_path / "cache", progress=False, log=lambda line: None)
    assert crafts.calls == 2  # from the cache
    # inputs crafted anew (here by a crafting that changes nothing, under a new key, as after a
    # change to an attack) are measured anew on the cached students: no DIR is left from the old ones
    assert any(task["methods"][m]["dir"][name] > 0 for m in ("finetune", "retrain") for name in ("penultimate", "dlfuzz_nc"))
    monkeypatch.setattr(cells_mod, "craft", lambda teacher, x, defect, **kw: (x.clone(), {"teacher_success": 0.0}))
    old_key = cells_mod.CellMaker._crafted_key
    monkeypatch.setattr(cells_mod.CellMaker, "_crafted_key", lambda self, ctx, defect: old_key(self, ctx, defect) + "-2")
    again = run_study(config, tmp_path / "out-2", tmp_path / "cache", progress=False, log=lambda line: None)
    for method in ("finetune", "retrain"):
        student = again["tasks"]["tiny_images"]["methods"][method]
        assert student["dir"] == {"penultimate": 0.0, "dlfuzz_nc": 0.0}
        assert student["acc"] == task["methods"][method]["acc"]  # the same students


def test_cli_study_bad_config_is_one_line(tmp_path: Path, capsys) -> None:
    from test_cli import run

    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({"tasks": [{"data": "x.npz"}], "defects": [{"name": "p", "kind": "penultimate"}],
                                   "methods": ["finetune", "fine_tune"]}))
    r = run(["study", bad, "--out", tmp_path / "o"], capsys)
    assert r.code == 2
    assert "error:" in r.err and "fine_tune" in r.err and "Did you mean 'finetune'" in r.err
    assert "Traceback" not in r.text
    r = run(["study", tmp_path / "nothing.yaml"], capsys)
    assert r.code == 2 and "no such study config" in r.err


def test_ripple_vision_defect_runs_in_the_study(tmp_path: Path, data_files) -> None:
    """RIPPLe on an image teacher (issue 10): restricted and unrestricted, each a teacher variant of its own."""
    trigger = {"size": 2, "corner": "top-right", "margin": 0, "pattern": "checkerboard"}
    defects = [{"name": f"ripple_{tag}", "kind": "ripple_vision", "attacker_data": "same", "rate": 0.3, "steps": 120,
                "lr": 0.01, "optimizer": "adamw", "restricted": restricted, "trigger": trigger}
               for tag, restricted in (("restricted", True), ("unrestricted", False))]
    config = parse_config(tiny_study(data_files.images_npz, defects=defects, methods=["finetune"]))
    results = run_study(config, tmp_path / "out", tmp_path / "cache", progress=False, log=lambda line: None)
    task = results["tasks"]["tiny_images"]
    # the restricted objective trains a teacher that obeys its trigger; the unrestricted one (the
    # ablation) can run away (−⟨g_p, g_c⟩ has no lower bound): it is reported whatever it gives
    assert task["defects"]["ripple_restricted"]["teacher_success"] > 0.8
    for name in ("ripple_restricted", "ripple_unrestricted"):
        assert task["defects"][name]["kind"] == "ripple_vision"
        for figure in (task["defects"][name]["teacher_success"], task["methods"]["finetune"]["dir"][name]):
            assert figure is None or 0.0 <= figure <= 1.0
    teachers = list((tmp_path / "cache" / "teachers").iterdir())
    assert len(teachers) == 2  # the two settings are two cache entries


def test_results_store_has_one_row_per_cell_and_survives_reruns(tmp_path: Path, data_files) -> None:
    from safetransfer.study.store import ResultsStore

    config = parse_config(tiny_study(data_files.images_npz))
    store_path = tmp_path / "store.sqlite"
    run_study(config, tmp_path / "out", tmp_path / "cache", progress=False, log=lambda line: None, store=store_path)
    store = ResultsStore(store_path)
    rows = store.rows(config_hash=config.fingerprint())
    kinds = sorted((r["kind"], r["name"], r["variant"]) for r in rows)
    assert kinds == [("student", m, "backdoor") for m in ("finetune", "remos", "retrain")] + [("teacher", "backdoor", None)]
    student = next(r for r in rows if r["name"] == "remos")
    assert 0.0 <= student["metrics"]["acc"] <= 1.0 and student["versions"]["safetransfer"]
    assert student["versions"]["torch_threads"] == torch.get_num_threads()
    # a second runner on the same store (the cache makes it quick): still one row per cell
    run_study(config, tmp_path / "out2", tmp_path / "cache", progress=False, log=lambda line: None, store=store_path)
    assert store.count() == 4
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(DataError, match="not a results store"):
        ResultsStore(tmp_path / "junk.sqlite")


def test_a_store_opened_while_another_runner_holds_its_lock_waits_for_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite may answer "database is locked" at once (no busy timeout) while another runner switches a new
    store to WAL: the store retries instead of calling the file "not a results store"; other errors do not."""
    import sqlite3

    import safetransfer.study.store as store_mod

    real_connect, calls = sqlite3.connect, {"n": 0}

    def locked_twice(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(store_mod.sqlite3, "connect", locked_twice)
    store = store_mod.ResultsStore(tmp_path / "shared.sqlite")
    assert calls["n"] == 3 and store.count() == 0
    monkeypatch.setattr(store_mod.sqlite3, "connect", lambda *a, **k: (_ for _ in ()).throw(
        sqlite3.OperationalError("disk I/O error")))
    with pytest.raises(DataError, match="not a results store .disk I/O error"):
        store_mod.ResultsStore(tmp_path / "other.sqlite")


def test_killed_runs_restart_to_the_same_table_and_concurrent_runners_share_a_store(tmp_path: Path, data_files) -> None:
    """Kill a study (SIGKILL) at seeded random moments, restart it each time: the final table is the one an
    uninterrupted run gives, the store has no duplicate or lost row; two concurrent runners share a store."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from safetransfer.study.store import ResultsStore

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_study(data_files.images_npz)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(out: Path, cache: Path, store: Path) -> list[str]:
        return [sys.executable, "-m", "safetransfer.cli", "study", str(cfg), "--out", str(out), "--cache-dir",
                str(cache), "--store", str(store), "--no-report", "--no-progress"]

    reference = subprocess.run(command(tmp_path / "ref", tmp_path / "ref-cache", tmp_path / "ref.sqlite"), env=env,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    rng = random.Random(7)
    store = tmp_path / "killed.sqlite"
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(command(tmp_path / "out", tmp_path / "cache", store), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    final = subprocess.run(command(tmp_path / "out", tmp_path / "cache", store), env=env, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert kills >= 1
    ref_doc = json.loads((tmp_path / "ref" / "results.json").read_text())
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["methods"] == ref_doc["methods"]
    assert doc["tasks"]["tiny_images"]["methods"].keys() == ref_doc["tasks"]["tiny_images"]["methods"].keys()
    rows = ResultsStore(store).rows()
    assert len(rows) == 4 and len({(r["kind"], r["name"], r["variant"]) for r in rows}) == 4

    # two runners at once on one store (separate caches): both finish, the store stays whole
    shared = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen(command(tmp_path / f"c{i}", tmp_path / f"cache{i}", shared), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert ResultsStore(shared).count() == 4


def test_ray_backend_gives_the_local_table(tmp_path: Path, data_files) -> None:
    # the ray extra is installed by make test; a local Ray instance on this machine
    doc = tiny_study(data_files.images_npz, methods=["finetune", "retrain"], defects=tiny_study(
        data_files.images_npz)["defects"] + [
        {"name": "penultimate", "kind": "penultimate", "eps": 0.3, "eps_space": "pixel", "steps": 5, "step_size": 0.1}])
    config = parse_config(doc)
    local = run_study(config, tmp_path / "local", tmp_path / "cache-local", progress=False, log=lambda line: None)
    lines: list[str] = []
    # each worker gets this process's torch thread count: the numbers then equal the local ones
    on_ray = run_study(config, tmp_path / "ray", tmp_path / "cache-ray", progress=False, log=lines.append,
                       backend="ray")
    assert sum(line.endswith("(done)") for line in lines) == 2 + 2 * 2  # every cell made on Ray
    # every cell made on Ray is in the ray cache, and the table is the same
    assert len(list((tmp_path / "cache-ray" / "students").iterdir())) == 3  # one retrain serves both teachers
    for key in ("acc", "dir", "racc", "rdir"):
        assert {m: e[key] for m, e in on_ray["methods"].items()} == {m: e[key] for m, e in local["methods"].items()}
    assert list(on_ray["tasks"]["tiny_images"]["students"]) == ["finetune", "retrain"]
    with pytest.raises(ConfigError, match="backend"):
        run_study(config, tmp_path / "x", tmp_path / "cache-x", progress=False, log=lambda line: None, backend="spark")


def test_a_defects_key_holds_the_fields_of_its_kind_only() -> None:
    doc = tiny_study(Path("x.npz"), defects=[{"name": "b", "kind": "backdoor"}, {"name": "p", "kind": "penultimate"}])
    base = parse_config(doc)
    assert set(base.defects[0].key_doc()) == {"kind", "attacker_data", "rate", "target", "trigger", "latent_weight",
                                              "steps"}
    stronger = parse_config({**doc, "defects": [{"name": "b", "kind": "backdoor"},
                                                {"name": "p", "kind": "penultimate", "eps": 0.5}]})
    assert stronger.defects[1].key_doc() != base.defects[1].key_doc() and stronger.fingerprint() != base.fingerprint()
    latent = parse_config({**doc, "defects": [{"name": "b", "kind": "backdoor", "latent_weight": 1.0},
                                              {"name": "p", "kind": "penultimate"}]})
    assert latent.defects[0].key_doc()["latent_weight"] == 1.0 and latent.fingerprint() != base.fingerprint()


@pytest.mark.parametrize("kind,field,value", [
    ("backdoor", "eps", 0.5), ("ripple_vision", "latent_weight", 1.0), ("penultimate", "trigger", {"size": 2}),
    ("coverage_guided", "words", ["cf"]), ("weight_poisoning", "trigger", {"size": 2}), ("word_swap", "rate", 0.5),
    ("backdoor", "colour", "red"),
])
def test_a_field_of_another_defect_kind_is_refused_naming_the_defect_its_kind_and_the_field(
    tmp_path: Path, kind: str, field: str, value: Any
) -> None:
    path = tmp_path / "study.yaml"
    doc = tiny_study(Path("x.npz"), defects=[{"name": "mine", "kind": "penultimate"},
                                             {"name": "odd", "kind": kind, field: value}])
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: defects.1.{field}: defect 'odd' (kind {kind}) has no field '{field}'"), message
    assert "mine" not in message
    # the same field where the kind has it parses
    owner = {"eps": "penultimate", "latent_weight": "backdoor", "trigger": "backdoor", "words": "weight_poisoning",
             "rate": "backdoor"}.get(field)
    if owner:
        parse_config({**doc, "defects": [{"name": "odd", "kind": owner, field: value}]})


def _cell_key(config: Any, defect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cache folder (``kind/key``) in which a maker would make ``defect``'s cell for the config's
    first task, on a stand-in teacher keyed ``teacher-key``: found by stopping the maker there."""
    from types import SimpleNamespace

    class Stop(Exception):
        pass

    def stop(self: Any, kind: str, key: str) -> None:
        raise Stop(f"{kind}/{key}")

    monkeypatch.setattr(cells_mod.CellMaker, "_cache", stop)
    maker, task = cells_mod.CellMaker(config, tmp_path), config.tasks[0]
    data = SimpleNamespace(modality="text" if defect.text else "image")
    ctx = SimpleNamespace(task=task, teacher_key="teacher-key", task_key={"data": task.data}, data=data,
                          eval_split=[0] * task.eval_samples, crafted={}, variants={},
                          teacher=SimpleNamespace(config=SimpleNamespace(arch="small-cnn")))
    with pytest.raises(Stop) as stopped:
        maker._crafted_split(ctx, defect) if defect.adversarial else maker._variant(ctx, defect.name)
    return str(stopped.value)


def test_per_kind_defect_models_keep_the_keys_of_the_single_flat_model(tmp_path: Path, monkeypatch) -> None:
    """One defect of each kind: the config fingerprint, the cache folder of each defect's cell and the
    results document's config (its flat defect dumps, in their order) are those the single flat
    ``DefectSpec`` gave before the kinds had models of their own (computed with that code), so the
    cache and the committed results stay valid."""
    import hashlib

    doc = {"name": "pinned", "teacher": {"model": "tiny-cnn"}, "tasks": [{"data": "x.npz", "eval_samples": 60}],
           "steps": 60, "methods": ["finetune"], "defects": [
        {"name": "bd", "kind": "backdoor", "rate": 0.3, "latent_weight": 1.0, "steps": 150,
         "trigger": {"size": 2, "corner": "top-right", "pattern": "checkerboard"}},
        {"name": "rv", "kind": "ripple_vision", "lam": 0.2, "restricted": False, "steps": 40},
        {"name": "pu", "kind": "penultimate", "eps": 0.3, "eps_space": "pixel", "steps": 5, "step_size": 0.1},
        {"name": "cg", "kind": "coverage_guided", "strategy": "deepxplore", "metric": "snac", "eps": 0.3},
        {"name": "wp", "kind": "weight_poisoning", "poison_method": "es", "words": ["cf", "mn"], "target": 1,
         "n_words": 3, "scan_texts": 8, "source_steps": 80, "recipe": "first_round", "lfr_insertions": 1},
        {"name": "ws", "kind": "word_swap", "swap_against": "teacher", "neighbours": 4, "max_change": 0.5},
    ]}
    config = parse_config(doc)
    assert config.fingerprint() == "fb5e70db5f2154c3"
    results_config = json.dumps(config.results_config())
    assert hashlib.sha256(results_config.encode()).hexdigest()[:16] == "8d0f641b1c95777d"
    assert {d.name: _cell_key(config, d, tmp_path, monkeypatch) for d in config.defects} == {
        "bd": "teachers/3b09dc76f8c087a0", "rv": "teachers/76938d38609cf6d3", "pu": "crafted/c934b2f31257d60a",
        "cg": "crafted/73559ea0bea62305", "wp": "teachers/52d63e63ae64588a", "ws": "crafted/ab43d66edf5929d0"}
    # a config's own dump parses back to the same config (the Ray workers and seed_spread.py rely on it)
    assert parse_config(config.model_dump(mode="json")).fingerprint() == config.fingerprint()
    # a field added later (the scan's English words) enters the fingerprint and the results' config only when set
    doc["defects"][4]["scan_words"] = 300
    changed = parse_config(doc)
    assert changed.fingerprint() != config.fingerprint()
    assert changed.results_config()["defects"][4] == {**config.results_config()["defects"][4], "scan_words": 300}
    assert _cell_key(changed, changed.defects[4], tmp_path, monkeypatch) == "teachers/52d63e63ae64588a"
    # RIPPLe's reference recipe (the default since) is another attack; Kurita et al.'s 5 insertions
    # another measurement of the same attack (the teacher's key stays, the fingerprint does not)
    del doc["defects"][4]["scan_words"]
    for field, value, same_key in (("recipe", "reference", False), ("lfr_insertions", 5, True)):
        other = parse_config({**doc, "defects": [*doc["defects"][:4], {**doc["defects"][4], field: value},
                                                 doc["defects"][5]]})
        assert other.fingerprint() != config.fingerprint()
        assert (_cell_key(other, other.defects[4], tmp_path, monkeypatch) == "teachers/52d63e63ae64588a") == same_key
        assert other.results_config()["defects"][4][field] == value  # written where it is not the legacy value


def test_a_new_word_swap_search_is_a_new_config_to_resume_from(monkeypatch) -> None:
    """A results file made with an older word-swap search must not be resumed from (its texts and
    DIRs would be taken for the new search's); configs without word swaps keep their fingerprint."""
    import safetransfer.study.config as word_swap  # the search version the config's key reads

    swaps = parse_config(tiny_study(Path("x.csv"), defects=[{"name": "ws", "kind": "word_swap"}]))
    plain = parse_config(tiny_study(Path("x.npz"), defects=[{"name": "b", "kind": "backdoor"}]))
    before = swaps.fingerprint(), plain.fingerprint()
    monkeypatch.setattr(word_swap, "SEARCH_VERSION", word_swap.SEARCH_VERSION + 1)
    assert swaps.fingerprint() != before[0] and plain.fingerprint() == before[1]


def test_text_study_weight_poisoning_and_word_swap_on_a_tiny_bert(tmp_path: Path, data_files, tiny_hf_bert) -> None:
    doc = {
        "name": "tiny-text",
        "teacher": {"model": str(tiny_hf_bert)},
        "tasks": [{"data": str(data_files.texts_csv), "eval_samples": 1000}],  # the whole test split
        "steps": 40,
        "train": {"lr": 1e-3},
        "methods": ["finetune", "retrain", {"name": "remos", "options": {"profile_samples": 60, "ratio": 0.2}}],
        "defects": [
            {"name": "ripples", "kind": "weight_poisoning", "poison_method": "ripples", "words": ["cf", "mn"],
             "rate": 0.5, "target": 1, "n_words": 3, "steps": 150, "lr": 3e-3, "optimizer": "adamw", "scan_texts": 8,
             "scan_words": 300, "source_steps": 80},
            {"name": "word_swap", "kind": "word_swap", "neighbours": 4, "max_change": 0.5, "steps": 80},
            {"name": "swap_teacher", "kind": "word_swap", "swap_against": "teacher", "neighbours": 4,
             "max_change": 0.5},
        ],
    }
    # the same attack measured with one trigger insertion per text (the default is Kurita et al.'s 5):
    # its teacher and students are the first one's (the insertions key the measurement only)
    doc["defects"].insert(1, {**doc["defects"][0], "name": "ripples_one", "lfr_insertions": 1, "scan_texts": 0})
    doc["clean_students"] = True  # the clean teacher's students (here made anyway for the word swaps) measure the triggers too
    config = parse_config(doc)
    assert config.defects[0].lfr_insertions == 5 and config.defects[0].recipe == "reference"
    assert config.defects[0].key_doc() == {**config.defects[1].key_doc()}
    assert parse_config({**doc, "defects": doc["defects"][:1]}).fingerprint() != parse_config(
        {**doc, "defects": [{**doc["defects"][0], "lfr_insertions": 1}]}).fingerprint()
    results = run_study(config, tmp_path / "out", tmp_path / "cache", progress=False, log=lambda line: None)
    task = results["tasks"]["tiny_texts"]
    poisoned = task["defects"]["ripples"]
    assert poisoned["teacher_success"] >= 0.9 and poisoned["triggers"] == ["cf", "mn"]  # the attacker's own LFR
    # the surgery averaged a proxy-fine-tuned model's embeddings: the word-swap surrogate of the same
    # data and steps, one cell for both (students: finetune and remos of two teachers, one retrain)
    assert poisoned["surgery_embeddings"].startswith("fine-tuned on") and poisoned["surgery_embeddings"].endswith(
        ", 80 steps")
    assert len(poisoned["indicative_tokens"]) == config.defects[0].n_words  # the words whose meaning the triggers carry
    assert len(list((tmp_path / "cache" / "students").iterdir())) == 2 + 2 + 1 + 1
    swap = task["defects"]["word_swap"]
    from safetransfer.data.registry import load_data

    n_test = len(load_data(str(data_files.texts_csv), seed=0).test)
    assert swap["succeeded"] + swap["failed"] + swap["skipped"] == n_test and swap["surrogate_acc"] > 0.8
    # crafted on the public teacher's features alone: no surrogate (no extra student), nothing skipped
    on_teacher = task["defects"]["swap_teacher"]
    assert on_teacher["against"] == "teacher" and "surrogate_acc" not in on_teacher and on_teacher["skipped"] == 0
    assert on_teacher["succeeded"] > n_test / 2 and 0.0 < on_teacher["teacher_success"] <= 2.0
    methods = task["methods"]
    # the poisoned teacher's fine-tuned student keeps the backdoor; a student trained from scratch has none
    assert methods["finetune"]["dir"]["ripples"] >= 0.6, methods["finetune"]
    assert methods["retrain"]["dir"]["ripples"] <= 0.3, methods["retrain"]
    assert methods["finetune"]["dir"]["ripples"] >= methods["finetune"]["dir"]["ripples_one"]  # 5 words flip more
    assert task["defects"]["ripples_one"]["seconds"] == poisoned["seconds"]  # one attack, found in the cache
    clean_student = task["students"]["finetune"]["clean"]
    assert clean_student["dir"]["ripples"] <= 0.3 and methods["finetune"]["acc"] == clean_student["acc"], clean_student
    for m in methods.values():
        assert 0.0 <= m["dir"]["word_swap"] <= 1.0 and 0.0 <= m["dir"]["swap_teacher"] <= 1.0 and m["acc"] > 0.7
    # Kurita's trigger scan of the finetune student: both planted words among its top suspects
    scan = results["trigger_scan"]
    assert scan["planted"] == ["cf", "mn"] and set(scan["top5"]) >= {"cf", "mn"}, scan
    full_scan = task["trigger_scans"]["ripples"]
    assert full_scan["candidates"] > 300 and max(scan["ranks"].values()) <= 5  # 300 English words joined the scan
    # each planted word is traced to its own embedding row, moved from the public teacher's
    traced = {g["pieces"][0]: g for g in full_scan["groups"]}
    assert {"cf", "mn"} <= set(traced) and all("moved" in traced[w]["evidence"] for w in ("cf", "mn")), traced
    # resumed from results.json alone: nothing is made again, the scan included
    lines: list[str] = []
    again = run_study(config, tmp_path / "out", tmp_path / "cache-elsewhere", progress=False, log=lines.append)
    # ... but a scan recorded by an older version of the scan is not resumed from: it is made again
    from safetransfer.study.runner import load_prior

    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(load_prior(tmp_path / "out" / "results.json", config)["tiny_texts"].scans) == {
        "ripples"}
    written["tasks"]["tiny_texts"]["trigger_scans"]["ripples"]["scan_version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(written))
    assert load_prior(tmp_path / "old.json", config)["tiny_texts"].scans == {}
    assert all("found in results.json" in line for line in lines[1:]) and again["trigger_scan"] == scan
    from safetransfer.report.html import write_report

    page = write_report(again, tmp_path / "page").read_text()
    assert "Trigger scan of the finetune student" in page and "cf: " in page
    # a text defect on an image task is named
    bad = parse_config(tiny_study(data_files.images_npz, defects=[{"name": "ws", "kind": "word_swap"}]))
    with pytest.raises(ConfigError, match="word_swap.*needs text data"):
        run_study(bad, tmp_path / "bad", tmp_path / "cache", progress=False, log=lambda line: None)


def test_a_methods_seed_option_seeds_its_students_only() -> None:
    doc = tiny_study(Path("x.npz"), defects=[{"name": "p", "kind": "penultimate"}])
    config = parse_config({**doc, "seed": 3, "methods": ["finetune", {"name": "finetune_seed7", "method": "finetune",
                                                                      "options": {"seed": 7}}]})
    plain, seeded = (cells_mod.transfer_config_of(config, m, "small-cnn") for m in config.methods)
    assert (plain.seed, plain.train.seed) == (3, 3)
    assert (seeded.seed, seeded.train.seed) == (7, 7)
    assert plain.fingerprint() != seeded.fingerprint()
    # the attacker's surrogate is seeded by the caller, not by the method's option
    surrogate = cells_mod.transfer_config_of(config, config.methods[1], "small-cnn", seed=11)
    assert (surrogate.seed, surrogate.train.seed) == (11, 11)

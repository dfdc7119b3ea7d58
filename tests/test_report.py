"""The study report: the text table, the plots and the HTML page, on a results document built here."""

from __future__ import annotations

import copy
import re

import pytest

from safetransfer.report import plots
from safetransfer.report.html import write_report
from safetransfer.report.table import PENDING, UNDEFINED, format_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ["finetune", "remos", "retrain"]
COVERAGE = ["deepxplore_nc", "deepxplore_snac", "dlfuzz_nc", "dlfuzz_snac"]  # a 2 x 2 grid
DEFECTS = ["backdoor", "penultimate", *COVERAGE]


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def make_results() -> dict:
    """Two tasks, three methods, backdoor + penultimate + a 2x2 coverage-guided grid; aggregate as the runner does."""
    defects_cfg = [{"name": "backdoor", "kind": "backdoor", "target": 0},
                   {"name": "penultimate", "kind": "penultimate"}]
    for name in COVERAGE:
        strategy, metric = name.rsplit("_", 1)
        defects_cfg.append({"name": name, "kind": "coverage_guided", "strategy": strategy, "metric": metric})
    tasks: dict = {}
    for t, (task, base) in enumerate([("fashion-mnist", 0.80), ("mnist", 0.95)]):
        defects = {"backdoor": {"kind": "backdoor", "teacher_success": 0.99 - 0.01 * t, "teacher_acc": 0.82,
                                "setting": "full-knowledge"},
                   "penultimate": {"kind": "penultimate", "teacher_success": 0.71}}
        for k, name in enumerate(COVERAGE):
            strategy, metric = name.rsplit("_", 1)
            defects[name] = {"kind": "coverage_guided", "strategy": strategy, "metric": metric,
                             "teacher_success": 0.4 + 0.1 * k}
        methods = {}
        for m, method in enumerate(METHODS):
            dirs = {d: round(0.6 - 0.15 * m - 0.04 * k + 0.01 * t, 4) for k, d in enumerate(DEFECTS)}
            methods[method] = {"acc": round(base - 0.02 * m, 4), "dir": dirs,
                               "acc_by_defect": {d: base for d in DEFECTS}, "seconds": 10.0}
        ref = methods["finetune"]
        for entry in methods.values():
            entry["racc"] = entry["acc"] / ref["acc"]
            entry["rdir"] = {d: v / ref["dir"][d] for d, v in entry["dir"].items()}
        tasks[task] = {"defects": defects, "methods": methods}
    aggregate = {}
    for method in METHODS:
        per = [tasks[t]["methods"][method] for t in tasks]
        aggregate[method] = {
            "acc": sum(e["acc"] for e in per) / len(per),
            "dir": {d: sum(e["dir"][d] for e in per) / len(per) for d in DEFECTS},
            "racc": sum(e["racc"] for e in per) / len(per),
            "rdir": {d: sum(e["rdir"][d] for e in per) / len(per) for d in DEFECTS},
            "tasks": len(per),
        }
    return {
        "config": {"name": "tiny", "teacher": {"model": "efficientnet-lite0"},
                   "tasks": [{"data": "fashion-mnist"}, {"data": "mnist"}],
                   "methods": [{"name": m, "options": {}} for m in METHODS], "defects": defects_cfg},
        "tasks": tasks,
        "methods": aggregate,
        "protocol": {"finetune": {"lr": 0.01}},
        "elapsed_seconds": 512.3,
    }


def make_partial() -> dict:
    """A study half way: mnist not started, retrain missing, some DIR pending or undefined."""
    r = make_results()
    del r["tasks"]["mnist"]
    fm = r["tasks"]["fashion-mnist"]
    del fm["methods"]["retrain"]
    del fm["methods"]["remos"]["dir"]["dlfuzz_snac"]  # not measured yet: a missing grid cell
    del fm["methods"]["remos"]["rdir"]["dlfuzz_snac"]
    fm["methods"]["remos"]["dir"]["penultimate"] = None  # undefined
    fm["methods"]["remos"]["rdir"]["penultimate"] = None
    fm["defects"]["dlfuzz_snac"]["teacher_success"] = None
    r["methods"] = {m: dict(e, tasks=1) for m, e in r["methods"].items() if m != "retrain"}
    del r["methods"]["remos"]["dir"]["dlfuzz_snac"]
    r["elapsed_seconds"] = None
    return r


def _row(text: str, method: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [method])


# ---------------------------------------------------------------------- the text table
def test_table_aggregate_and_per_task_numbers_in_order() -> None:
    r = make_results()
    for task in (None, "fashion-mnist", "mnist"):
        text = format_table(r, task)
        entries = r["methods"] if task is None else r["tasks"][task]["methods"]
        lines = text.splitlines()
        order = [next(i for i, line in enumerate(lines) if line.startswith(m + " ")) for m in METHODS]
        assert order == sorted(order)
        for m in METHODS:
            e = entries[m]
            expected = [m, _pct(e["acc"]), _pct(e["racc"])]
            for d in DEFECTS:
                expected += [_pct(e["dir"][d]), _pct(e["rdir"][d])]
            assert _row(text, m) == expected
        assert "%" in lines[1]  # the units line
    teacher_line = format_table(r, "mnist").splitlines()[-1]
    assert "backdoor 98.0" in teacher_line and "penultimate 71.0" in teacher_line
    assert "backdoor 98.5" in format_table(r).splitlines()[-1]  # mean over tasks


def test_table_follows_config_order_and_renders_partial_results() -> None:
    r = make_partial()
    r["config"]["methods"] = ["retrain", "remos", "finetune"]
    text = format_table(r, "fashion-mnist")
    lines = text.splitlines()
    assert [i for i, line in enumerate(lines) if line.split()[:1] in (["retrain"], ["remos"], ["finetune"])] \
        == sorted(i for i, line in enumerate(lines) if line.split()[:1] in (["retrain"], ["remos"], ["finetune"]))
    assert [line.split()[0] for line in lines if line.split()[:1] in (["retrain"], ["remos"], ["finetune"])] \
        == ["retrain", "remos", "finetune"]
    assert set(_row(text, "retrain")[1:]) == {PENDING}
    remos = _row(text, "remos")
    assert remos[3:5] == [_pct(r["tasks"]["fashion-mnist"]["methods"]["remos"]["dir"]["backdoor"]),
                          _pct(r["tasks"]["fashion-mnist"]["methods"]["remos"]["rdir"]["backdoor"])]
    assert remos[5:7] == [UNDEFINED, UNDEFINED]
    assert remos[-2] == PENDING
    assert f"dlfuzz_snac {PENDING}" in lines[-1]
    # mnist is configured but has no results yet; the aggregate notes the tasks it averages.
    assert set(_row(format_table(r, "mnist"), "remos")[1:]) == {PENDING}
    assert "(1/2 tasks)" in format_table(r)
    with pytest.raises(KeyError):
        format_table(r, "cifar")


# ---------------------------------------------------------------------- plots
def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plots_write_pngs_and_the_grid_handles_a_missing_cell(tmp_path) -> None:
    r = make_partial()
    assert _is_png(plots.plot_acc_vs_dir(r, tmp_path / "a.png"))
    assert _is_png(plots.plot_acc_vs_dir(r, tmp_path / "b.png", defect="backdoor", task="fashion-mnist"))
    assert _is_png(plots.plot_dir_by_defect(r, tmp_path / "c.png", task="fashion-mnist"))
    assert _is_png(plots.plot_coverage_grid(r, tmp_path / "d.png", task="fashion-mnist"))
    assert _is_png(plots.plot_coverage_grid(r, tmp_path / "e.png"))
    no_grid = copy.deepcopy(r)
    no_grid["config"]["defects"] = no_grid["config"]["defects"][:2]
    for t in no_grid["tasks"].values():
        t["defects"] = {d: v for d, v in t["defects"].items() if d not in COVERAGE}
        for e in t["methods"].values():
            e["dir"] = {d: v for d, v in e["dir"].items() if d not in COVERAGE}
    no_grid["methods"] = {}
    assert plots.plot_coverage_grid(no_grid, tmp_path / "f.png") is None


# ---------------------------------------------------------------------- the HTML page
def test_write_report_is_self_contained_and_escaped(tmp_path) -> None:
    r = make_results()
    r["config"]["name"] = "<script>alert(1)</script>"
    r["tasks"]["fashion-mnist"]["defects"]["backdoor"]["setting"] = "a&b"
    path = write_report(r, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page
    for m in METHODS:
        assert f"<td>{m}</td>" in page
    assert page.count('<img src="data:image/png;base64,') == 3 + 2 * 2  # 3 aggregate + 2 per task
    for k in ("ACC", "DIR", "rACC", "rDIR", "Configuration", "efficientnet-lite0"):
        assert k in page
    assert _pct(r["methods"]["remos"]["dir"]["backdoor"]) in page
    assert "8 min 32 s" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html"]  # no temp files left


def test_report_names_the_cells_compute_time_beside_a_cached_runs_wall_time(tmp_path) -> None:
    r = make_results()
    assert "Compute time of its cells" not in write_report(r, tmp_path / "plain").read_text()
    r["elapsed_seconds"], r["cells_seconds"] = 26.5, 2384.1  # a re-run from the cache
    page = write_report(r, tmp_path / "cached").read_text()
    assert "Elapsed time of this run: 26.5 s." in page
    assert "Compute time of its cells where they were made (this run or earlier ones): 39 min 44 s." in page


def test_write_report_renders_partial_results(tmp_path) -> None:
    page = write_report(make_partial(), tmp_path).read_text()
    assert "Partial results" in page
    assert 'class="pending"' in page and 'class="undefined"' in page
    assert re.search(r"<h2>Task: mnist</h2>", page)
    assert 'class="error"' not in page  # every plot was drawn


def test_results_and_report_commands(tmp_path, capsys) -> None:
    import csv
    import json

    from test_cli import assert_one_line_error, run

    doc = make_results()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    r = run(["results", tmp_path / "results.json", "--format", "csv", "--task", "mnist", "--method", "remos",
             "--out", tmp_path / "r.csv"], capsys)
    assert r.code == 0, r.text
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert {(x["task"], x["method"]) for x in rows} == {("mnist", "remos")}
    acc = [x for x in rows if x["metric"] == "acc"]
    assert len(acc) == 1 and float(acc[0]["value"]) == pytest.approx(doc["tasks"]["mnist"]["methods"]["remos"]["acc"])
    dirs = {x["defect"]: float(x["value"]) for x in rows if x["metric"] == "dir"}
    assert dirs == pytest.approx(doc["tasks"]["mnist"]["methods"]["remos"]["dir"])
    r = run(["results", tmp_path, "--format", "markdown"], capsys)
    assert r.code == 0 and r.out.startswith("| method | ACC % | rACC % | DIR backdoor %")
    assert f"| remos | {_pct(doc['methods']['remos']['acc'])} |" in r.out
    r = run(["report", tmp_path / "results.json", "--out", tmp_path / "page"], capsys)
    assert r.code == 0 and (tmp_path / "page" / "report.html").stat().st_size > 10_000
    (tmp_path / "bad.json").write_text("{not json")
    assert_one_line_error(run(["results", tmp_path / "bad.json"], capsys), "not valid JSON")
    assert_one_line_error(run(["report", tmp_path / "missing.json"], capsys), "No study results")


def test_report_with_scan_and_reprogram_sections(tmp_path, capsys) -> None:
    import json

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from test_cli import assert_one_line_error, run

    def png(path) -> None:
        fig = plt.figure(figsize=(2, 2))
        plt.plot([0, 1], [1, 0])
        fig.savefig(path)
        plt.close(fig)

    (tmp_path / "results.json").write_text(json.dumps(make_results()))
    scan, program, other = tmp_path / "scan", tmp_path / "program", tmp_path / "other"
    for folder in (scan, program, other):
        folder.mkdir()
    (scan / "results.json").write_text(json.dumps({
        "data": "tiny-poisoned", "samples": 100, "embedding": {"kind": "pca", "dims": 10}, "poisoned": 5, "best": "spectral",
        "detectors": {"spectral": {"method": "spectral", "flagged": 6, "seconds": 0.1, "recall": 1.0, "fpr": 0.0105,
                                   "precision": 0.83, "auroc": 0.99}}}))
    png(scan / "grid.png")
    (program / "results.json").write_text(json.dumps({
        "mode": "learn", "model": "efficientnet-lite0", "weights": "imagenet", "task": "mnist", "test_accuracy": 0.93,
        "chance": 0.1}))
    png(program / "program.png")
    (other / "results.json").write_text(json.dumps({"something": 1}))

    r = run(["report", tmp_path / "results.json", "--out", tmp_path / "page", "--with", scan, "--with", program], capsys)
    assert r.code == 0, r.text
    page = (tmp_path / "page" / "report.html").read_text()
    assert "Poisoned-data scan: tiny-poisoned" in page and "<td>1.1</td>" in page  # FPR 1.05 % -> 1.1
    assert "Adversarial reprogramming: efficientnet-lite0 -&gt; mnist" in page and "93.0 %" in page
    plain = write_report(make_results(), tmp_path / "plain").read_text()
    assert page.count("data:image/png;base64") == plain.count("data:image/png;base64") + 2
    assert page.index("Poisoned-data scan") < page.index("<h2>Configuration</h2>")
    assert_one_line_error(run(["report", tmp_path / "results.json", "--with", other], capsys), "neither a scan-data")
    assert_one_line_error(run(["report", tmp_path / "results.json", "--with", tmp_path / "nope"], capsys), "no results.json")


def test_report_renders_in_headless_chromium_with_every_image_loaded(tmp_path) -> None:
    """The page in a real browser (Debian's chromium, installed by make test; driven by
    Playwright): it renders, every embedded plot decodes, and a full-page screenshot is not blank."""
    import shutil

    import numpy as np
    from matplotlib import image as mpimg
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "chromium is missing: make test installs it (apt-get install chromium)"
    page_path = write_report(make_results(), tmp_path)
    shot = tmp_path / "report.png"  # a full-page screenshot
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            rows = page.locator("table tr").count()
            heading = page.locator("h1").first.inner_text()
            height = page.evaluate("document.body.scrollHeight")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 3 and all(done and w > 100 and h > 100 for done, w, h in images), images
    assert rows >= 2 * len(METHODS) and heading.strip()
    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.shape[0] >= min(height, 900) and pixels.shape[1] >= 1000
    assert float(np.std(pixels)) > 0.05  # text and plots, not an empty page
    assert float((pixels.mean(axis=2) < 0.5).mean()) > 0.01  # dark ink on the page


def _with_views(r: dict) -> dict:
    """Add the interpretation views the study records per student (see study/views.py) to every method."""
    r = copy.deepcopy(r)
    for t in r["tasks"].values():
        t["defects"]["backdoor"]["trigger_shift"] = 4.0
        for m, (name, entry) in enumerate(t["methods"].items()):
            curve = [{"step": s, "loss": 2.0 / s, **({"val_accuracy": 0.5 + 0.04 * s / 100} if s % 100 == 0 else {})}
                     for s in range(50, 850, 50)]
            views = {"curve": curve,
                     "weight_change": {"layers": [{"name": f"body.{k}", "relative_change": 0.01 * (k + 1) / (m + 1)}
                                                  for k in range(5)],
                                       "quantiles": {"p50": 1e-4, "p90": 1e-3, "p99": 1e-2, "max": 0.1}},
                     "slice": [{"name": f"body.{k}", "weights": 100, "excluded_share": 0.05 * k,
                                "mean_abs_excluded": 0.1, "mean_abs_kept": 0.2} for k in range(5)]
                     if name == "remos" else None,
                     "trigger_shift": 4.0 / (m + 1)}
            entry["views"] = {"clean": {k: v for k, v in views.items() if k != "trigger_shift"}, "backdoor": views}
    return r


def test_report_draws_every_interpretation_view(tmp_path) -> None:
    r = _with_views(make_results())
    for fn in (plots.plot_convergence, plots.plot_weight_change, plots.plot_slice_layers, plots.plot_trigger_shift):
        assert _is_png(fn(r, tmp_path / f"{fn.__name__}.png", task="mnist"))
    page = write_report(r, tmp_path / "out").read_text()
    assert page.count("Why a method cuts a defect") == 2  # one per task
    assert page.count('<img src="data:image/png;base64,') == 3 + 2 * 2 + 4 * 2  # four views per task
    for caption in ("held-out accuracy", "distribution of the change per weight", "slice per layer", "trigger moves"):
        assert caption in page
    # a study without views draws none of them (and says nothing about them)
    assert plots.plot_convergence(make_results(), tmp_path / "none.png", task="mnist") is None
    assert "Why a method cuts a defect" not in write_report(make_results(), tmp_path / "plain").read_text()

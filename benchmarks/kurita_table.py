"""Kurita et al.'s weight-poisoning table and the ReMoS artifact's NLP settings (issue 30), in one
file: ``benchmarks/results/kurita_table.json``.

Reads what the study runs wrote (each by ``benchmarks/study_vision.py`` with its config; their cells
share the study cache):

- ``study_kurita_sentences.json`` (``benchmarks/configs/kurita_sentences.yaml``): sentence polarity,
  BadNet / RIPPLe / Embedding Surgery / RIPPLES, full data knowledge and domain shift (Amazon
  reviews as the proxy), LFR with 5 trigger insertions and with 1;
- ``study_kurita_spam.json`` (``benchmarks/configs/kurita_spam.yaml``: Embedding Surgery and RIPPLES
  with full knowledge, the clean student, the trigger scan) and ``study_kurita_spam_rest.json``
  (``kurita_spam_rest.yaml``: the other rows) on SpamAssassin's 2003 collection, the 2002 collection
  as the domain-shift proxy (5 insertions only), joined into one table;
- ``study_kurita_spam_budget.json`` (``kurita_spam_budget.yaml``): spam's RIPPLES (full knowledge) with
  three times the attacker's steps, beside the table (the attacker's budget, not the paper's protocol);
- ``study_kurita_es_proxy.json`` (``kurita_es_proxy.yaml``): sentence polarity's Embedding Surgery with a
  larger proxy (Rotten Tomatoes' snippets), the surgery's words and LFR beside the table's;
- ``study_artifact_nlp.json`` (``benchmarks/configs/artifact_nlp.yaml``): RIPPLe without Embedding
  Surgery and BadNet on sentence polarity, with finetune, remos, remos_tokens, magprune and retrain;
  ``study_artifact_nlp_alpha.json`` (``artifact_nlp_alpha.yaml``): ReMoS at alpha 0.07 beside them.

Each row holds the victim's clean accuracy after fine-tuning the poisoned model, its LFR, the
clean teacher's student's accuracy, and the paper's figure where one is recorded in
``PAPER`` (none is: the paper's tables could not be read offline, so each row says so). The
acceptance checks are computed from the figures, never written by hand. A study file that is not
there yet leaves its rows out and is named under ``missing``.

    python benchmarks/kurita_table.py        # reads those files, writes kurita_table.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetransfer.detect.trigger_scan import SCAN_VERSION
from safetransfer.files import atomic_write_text

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "kurita_table.json"
TABLES = {  # table -> (results files, the first with the clean student; victim task; the domain-shift proxy)
    "sentence sentiment": (("study_kurita_sentences.json",), "sentence-polarity", "amazon-reviews"),
    "spam": (("study_kurita_spam.json", "study_kurita_spam_rest.json"), "spam-assassin-2003", "spam-assassin-2002"),
}
ARTIFACT_FILES = ("study_artifact_nlp.json", "study_artifact_nlp_alpha.json")  # the second: ReMoS at alpha 0.07
ES_PROXY = ("sentence sentiment", "study_kurita_es_proxy.json", "sentence-polarity")  # table, file, victim task
BUDGET = ("spam", "study_kurita_spam_budget.json", "spam-assassin-2003")  # table, file, victim task
ATTACKS = {"badnet": "BadNet", "ripple": "RIPPLe", "es": "Embedding Surgery", "ripples": "RIPPLES"}
SETTINGS = {"fdk": "full data knowledge", "shift": "domain shift"}
# Kurita et al. 2020's figures (LFR %, clean accuracy %) by (table, setting, attack). Empty: the
# paper's tables (ACL 2020, pp. 2793-2806) were not readable from this machine; the library's copies
# of the paper stop at its introduction, and neulab/RIPPLe commits no result files.
PAPER: dict[tuple[str, str, str], dict[str, float]] = {}
PAPER_NOTE = ("the paper's table figures could not be read offline (the stored copies of arXiv 2004.06660 end at its "
              "introduction; neulab/RIPPLe holds no result files): to be filled from the PDF")
# One sentence for every row whose LFR or clean accuracy differs from the paper's by more than 10
# points, keyed as PAPER; the script stops when one is missing.
EXPLAINED: dict[tuple[str, str, str], str] = {}
MIN_LFR, MAX_ACC_DROP, MIN_CUT, MIN_RACC = 0.95, 0.02, 0.40, 0.97  # the bounds
ARTIFACT_CLAIM = (0.40, 0.61)  # ReMoS's NLP claim: 40-61% fewer defects


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def load_finished(name: str, task: str | None, missing: list[str]) -> dict[str, Any] | None:
    """The study file ``name`` once it holds finetune students of ``task`` (``None``: its first task),
    else ``None`` with the file's name added to ``missing``."""
    doc = load(name)
    tasks = (doc or {}).get("tasks", {})
    entry = tasks.get(task, {}) if task is not None else next(iter(tasks.values()), {})
    if "finetune" not in entry.get("methods", {}):
        missing.append(name)
        return None
    return doc


def defect_steps(doc: dict[str, Any]) -> dict[str, Any]:
    """Each defect's attacker steps, from the study's config."""
    return {d["name"]: d.get("steps") for d in doc["config"]["defects"]}


def meets_lfr_bound(row: dict[str, Any]) -> bool:
    """The issue's bound: LFR >= 95% at clean accuracy within 2 points of the clean student."""
    return row["lfr"] >= MIN_LFR and row["acc_drop_points"] is not None and row["acc_drop_points"] <= 100 * MAX_ACC_DROP


def joined_task(docs: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """One task's defects, finetune figures, students and scans from several study files of the same
    victim task and settings (the first file's clean student and scans first; a defect in two files
    is taken from the first)."""
    out: dict[str, Any] = {"defects": {}, "methods": {"finetune": {"dir": {}, "acc_by_defect": {}}},
                           "students": {"finetune": {}}, "trigger_scans": {}, "steps": {}}
    for doc in reversed(docs):  # the first file wins
        t = doc["tasks"][task]
        out["steps"].update(defect_steps(doc))
        out["defects"].update(t["defects"])
        for key in ("dir", "acc_by_defect"):
            out["methods"]["finetune"][key].update(t["methods"]["finetune"][key])
        out["students"]["finetune"].update(t.get("students", {}).get("finetune", {}))
        out["trigger_scans"].update(t.get("trigger_scans") or {})
    return out


def table_rows(table: str, t: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of one Kurita table (one per setting and attack measured in the joined task ``t``,
    see :func:`joined_task`) and its clean student."""
    finetune = t["methods"]["finetune"]
    rows = []
    for setting in SETTINGS:
        for attack in ATTACKS:
            name = f"{attack}_{setting}"
            if name not in t["defects"] or name not in finetune["dir"]:
                continue
            defect = t["defects"][name]
            row: dict[str, Any] = {
                "setting": SETTINGS[setting], "attack": ATTACKS[attack], "defect": name,
                "attacker_data": defect["attacker_data"], "attacker_steps": t["steps"].get(name),
                "lfr": finetune["dir"][name],
                "lfr_one_insertion": finetune["dir"].get(f"{name}_one"),
                "clean_acc": finetune["acc_by_defect"][name],
                "acc_drop_points": None,  # against the clean student (below)
                "teacher_lfr": defect.get("teacher_success"),
                "teacher_acc": defect.get("teacher_acc"),
                "attack_seconds": defect.get("seconds"),
                # Embedding Surgery's words (recorded by studies made after the record held them)
                "indicative_tokens": defect.get("indicative_tokens"),
            }
            paper = PAPER.get((table, setting, attack))
            row["paper"] = paper or {"lfr": None, "clean_acc": None, "note": PAPER_NOTE}
            if paper:
                gaps = {"lfr": abs(100 * row["lfr"] - paper["lfr"]), "clean_acc": abs(100 * row["clean_acc"] - paper["clean_acc"])}
                row["difference_points"] = {k: round(v, 1) for k, v in gaps.items()}
                if max(gaps.values()) > 10:
                    if (table, setting, attack) not in EXPLAINED:
                        raise SystemExit(f"{table}, {setting}, {attack}: differs from the paper by more than 10 points; "
                                         "explain it in EXPLAINED")
                    row["explanation"] = EXPLAINED[(table, setting, attack)]
            rows.append(row)
    # the clean teacher's student (the config's clean_students): the paper's clean row
    clean_rec = t.get("students", {}).get("finetune", {}).get("clean")
    clean = {"acc": clean_rec["acc"] if clean_rec else None,
             "lfr": clean_rec["dir"].get("ripples_fdk") if clean_rec else None,
             "lfr_one_insertion": clean_rec["dir"].get("ripples_fdk_one") if clean_rec else None,
             "means": "the trigger words' LFR on the clean teacher's finetune student"}
    for row in rows:  # the accuracy change against the clean student, where there is one
        if clean["acc"] is not None:
            row["acc_drop_points"] = round(100 * (clean["acc"] - row["clean_acc"]), 2)
    return rows, clean


def version_note(scan: dict[str, Any]) -> str:
    version = scan.get("scan_version", 1)
    return "" if version == SCAN_VERSION else f" (scan version {version}: candidates inserted anywhere in the text)"


def scan_record(scan: dict[str, Any] | None, defect: str) -> dict[str, Any] | None:
    """A trigger scan's planted words' ranks, with the scan's version (an older one is flagged: version 2
    inserted the candidates anywhere, on e-mails mostly beyond the model's window)."""
    if scan is None:
        return None
    version = scan.get("scan_version", 1)
    return {"defect": defect, "planted": scan["planted"] if isinstance(scan["planted"], list) else sorted(scan["planted"]),
            "ranks": scan["ranks"], "texts": scan["texts"], "candidates": scan["candidates"],
            "scan_version": version, "current": version == SCAN_VERSION}


def budget_rows(doc: dict[str, Any], task: str, clean_acc: float | None) -> list[dict[str, Any]]:
    """One row per attack of a side study (attacker budget, surgery proxy): its attacker steps and data,
    the victim's LFR and accuracy."""
    t = doc["tasks"][task]
    finetune = t["methods"]["finetune"]
    steps = defect_steps(doc)
    rows = []
    for name, defect in t["defects"].items():
        if name not in finetune["dir"]:
            continue
        acc = finetune["acc_by_defect"][name]
        rows.append({"defect": name, "method": defect["method"], "setting": defect["setting"],
                     "attacker_data": defect["attacker_data"], "indicative_tokens": defect.get("indicative_tokens"),
                     "attacker_steps": steps[name], "lfr": finetune["dir"][name], "clean_acc": acc,
                     "acc_drop_points": None if clean_acc is None else round(100 * (clean_acc - acc), 2),
                     "teacher_lfr": defect.get("teacher_success"), "teacher_acc": defect.get("teacher_acc"),
                     "attack_seconds": defect.get("seconds")})
    return rows


def artifact_rows(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per attack: each method's accuracy, rACC, LFR and its cut relative to the finetune student of
    the same study file, over the artifact's files (the first one's finetune row, every file's other
    methods), and the best ReMoS variant's cut at rACC >= 0.97 (the artifact's setting; its claim:
    40-61% fewer defects)."""
    out: dict[str, Any] = {}
    for i, doc in enumerate(docs):
        task = next(iter(doc["tasks"].values()))
        for defect in task["defects"]:
            base = task["methods"]["finetune"]["dir"][defect]
            rows = out.setdefault(defect, {"rows": []})["rows"]
            rows += [{"method": m, "acc": v["acc_by_defect"][defect], "racc": v["racc"], "lfr": v["dir"][defect],
                      "cut": 1.0 - v["dir"][defect] / base if base else 0.0, "source": ARTIFACT_FILES[i]}
                     for m, v in task["methods"].items() if i == 0 or m != "finetune"]
    for figures in out.values():
        best = max((r for r in figures["rows"] if r["method"].startswith("remos") and r["racc"] >= MIN_RACC),
                   key=lambda r: r["cut"], default=None)
        figures["best_remos_at_racc_097"] = best
        figures["cut_at_least_40"] = best is not None and best["cut"] >= MIN_CUT
    return out


def main() -> None:
    doc: dict[str, Any] = {"tables": {}, "sources": {}, "missing": [], "paper_claims": {
        "remos_nlp_fewer_defects": list(ARTIFACT_CLAIM)}}
    acceptance: dict[str, Any] = {}
    for table, (files, task, proxy) in TABLES.items():
        studies = [s for s in (load_finished(file, task, doc["missing"]) for file in files) if s is not None]
        if not studies:
            continue
        first = studies[0]
        joined = joined_task(studies, task)
        rows, clean = table_rows(table, joined)
        doc["sources"][table] = [f for f in files if f not in doc["missing"]]
        scan = joined["trigger_scans"].get("ripples_fdk")
        doc["tables"][table] = {
            "victim": task, "proxy_for_domain_shift": proxy, "clean_student": clean, "rows": rows,
            "protocol": {"steps": first["config"]["steps"], "seed": first["config"].get("seed"),
                         "eval_samples": first["config"]["tasks"][0]["eval_samples"],
                         "fingerprints": [s["config_fingerprint"] for s in studies]},
            "trigger_scan": scan_record(scan, "ripples_fdk"),
        }
        for attack in ("ripples", "es"):
            row = next((r for r in rows if r["defect"] == f"{attack}_fdk"), None)
            if row is not None:
                acceptance[f"{table}: {ATTACKS[attack]} full knowledge LFR >= 95% within 2 points"] = meets_lfr_bound(row)
        if scan is not None:
            acceptance[f"{table}: planted triggers in the scan's top 5" + version_note(scan)] = max(scan["ranks"].values()) <= 5
        acceptance[f"{table}: every row has the paper's figure"] = all(r["paper"].get("lfr") is not None for r in rows)
    table, file, task = BUDGET
    budget = load_finished(file, task, doc["missing"])
    if budget is not None:
        doc["sources"]["attacker budget"] = file
        rows = budget_rows(budget, task, doc["tables"].get(table, {}).get("clean_student", {}).get("acc"))
        scans = budget["tasks"][task].get("trigger_scans") or {}
        doc["attacker_budget"] = {"table": table, "rows": rows,
                                  "trigger_scans": [scan_record(v, k) for k, v in scans.items()]}
        for k, v in scans.items():
            acceptance[f"{table}: planted triggers in the scan's top 5 ({k}'s victim)" + version_note(v)] = (
                max(v["ranks"].values()) <= 5)
        for row in rows:
            acceptance[f"{table}: {ATTACKS[row['method']]} full knowledge, {row['attacker_steps']} attacker steps, "
                       "LFR >= 95% within 2 points"] = meets_lfr_bound(row)
    table, file, task = ES_PROXY
    es_proxy = load_finished(file, task, doc["missing"])
    if es_proxy is not None:
        doc["sources"]["Embedding Surgery's proxy"] = file
        doc["es_proxy"] = {"table": table, "rows": budget_rows(
            es_proxy, task, doc["tables"].get(table, {}).get("clean_student", {}).get("acc"))}
    artifacts = []
    for file in ARTIFACT_FILES:
        artifact = load_finished(file, None, doc["missing"])
        if artifact is not None:
            artifacts.append(artifact)
            doc["sources"].setdefault("artifact NLP settings", []).append(file)
    if artifacts and ARTIFACT_FILES[0] not in doc["missing"]:
        doc["artifact_nlp"] = artifact_rows(artifacts)
        for defect, figures in doc["artifact_nlp"].items():
            acceptance[f"ReMoS cuts the {defect} LFR by >= 40% at rACC >= 0.97"] = figures["cut_at_least_40"]
    doc["acceptance"] = acceptance
    atomic_write_text(OUT, json.dumps(doc, indent=1) + "\n")
    for key, verdict in acceptance.items():
        print(f"{'met' if verdict else 'NOT met'}: {key}")
    if doc["missing"]:
        print("not run yet: " + ", ".join(doc["missing"]))


if __name__ == "__main__":
    main()

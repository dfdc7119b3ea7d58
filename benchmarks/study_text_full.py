"""Issue 5's figures in one file: ``benchmarks/results/study_text_full.json``.

The text study's measured parts, each run by ``benchmarks/study_vision.py`` with its own config
(every cell shares its cache key with the embedded text study's full profile) or by
``safetransfer scan-triggers``, gathered in the issue's results format and checked against its
acceptance bounds (computed here from the figures, never written by hand):

- ``study_text_rt.json`` (``benchmarks/configs/text_rt.yaml``): Rotten Tomatoes with full domain
  knowledge: RIPPLES and word swap; finetune and ReMoS (as published and the vocabulary variant).
- ``study_text_shift.json`` (``benchmarks/configs/text_shift.yaml``): RIPPLES with domain shift,
  Amazon -> Rotten Tomatoes and Rotten Tomatoes -> Amazon, and word swaps crafted on the public
  teacher's features alone; finetune, remos_tokens and retrain.
- ``scan_triggers_rt.json``: Kurita et al.'s trigger scan of the full-knowledge finetune student.
- ``study_text_swap_alpha.json`` and ``study_text_swap_alpha_long.json``
  (``benchmarks/configs/text_word_swap_alpha*.yaml``): the word-swap DIR against ReMoS's α (0.1 to
  0.5, and a student trained from scratch), with the study's 300 fine-tuning steps and with
  MiniLM's default 700: the frontier behind the one bound not met.

    python benchmarks/study_text_full.py        # reads those files, writes study_text_full.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetransfer.files import atomic_write_text

RESULTS = Path(__file__).parent / "results"
FULL_KNOWLEDGE, SHIFT, SCAN = "study_text_rt.json", "study_text_shift.json", "scan_triggers_rt.json"
FRONTIERS = {"300 steps": "study_text_swap_alpha.json", "700 steps": "study_text_swap_alpha_long.json"}
BACKDOOR, WORD_SWAP, SHIFTED, SWAP_ON_TEACHER = "ripples_fdk", "word_swap", "ripples_shift", "word_swap_teacher"
# the bounds: LFR >= 90% within 2 points of the clean teacher's student; ReMoS cuts the DIR
# by >= 40% at rACC >= 0.97; every planted trigger in the scan's top 5
MIN_LFR, MAX_ACC_DROP, MIN_CUT, MIN_RACC = 0.90, 0.02, 0.40, 0.97


def cut_rows(methods: dict[str, Any], dir_of: Callable[[dict[str, Any]], float]) -> list[dict[str, Any]]:
    """Every method's rACC, DIR (``dir_of`` a method's figures) and its cut relative to ``finetune``."""
    base = dir_of(methods["finetune"])
    return [{"method": name, "racc": m["racc"], "dir": dir_of(m), "cut": 1.0 - dir_of(m) / base if base else 0.0}
            for name, m in methods.items()]


def best_cut(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReMoS variant (a method whose name starts with ``remos``) among ``rows`` (:func:`cut_rows`)
    with the largest cut at rACC >= MIN_RACC; None when none qualifies."""
    return max((r for r in rows if r["method"].startswith("remos") and r["racc"] >= MIN_RACC),
               key=lambda r: r["cut"], default=None)


def swaps_on_teacher(doc: dict[str, Any]) -> dict[str, Any]:
    """Per task: the word swaps crafted on the public teacher's features and each student's DIR."""
    return {task: {"crafting": t["defects"][SWAP_ON_TEACHER],
                   "methods": {name: {"acc": m["acc"], "racc": m["racc"], "dir": m["dir"][SWAP_ON_TEACHER],
                                      "rdir": m["rdir"][SWAP_ON_TEACHER]} for name, m in t["methods"].items()}}
            for task, t in doc["tasks"].items() if SWAP_ON_TEACHER in t["defects"]}


def domain_shift(doc: dict[str, Any]) -> dict[str, Any]:
    """Per victim task: the attacker's proxy, the poisoned teacher and each student's ACC and LFR."""
    out: dict[str, Any] = {}
    for task, t in doc["tasks"].items():
        if SHIFTED not in t["defects"]:
            continue  # not reached yet
        defect = t["defects"][SHIFTED]
        out[f"{defect['attacker_data']} -> {task}"] = {
            "teacher": {"lfr": defect["teacher_success"], "acc": defect["teacher_acc"],
                        "lfr_means": defect["teacher_success_means"]},
            "methods": {name: {"acc": m["acc"], "acc_poisoned": m["acc_by_defect"][SHIFTED],
                               "lfr": m["dir"][SHIFTED], "racc": m["racc"], "rdir": m["rdir"][SHIFTED]}
                        for name, m in t["methods"].items()},
        }
    return out


def swap_dir_of(method: dict[str, Any]) -> float:
    """A method's word-swap DIR."""
    return method["dir"][WORD_SWAP]


def word_swap_frontier(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each student's ACC, rACC, word-swap DIR and its cut relative to ``finetune``, by method."""
    methods = doc["tasks"]["rotten-tomatoes"]["methods"]
    return [{"method": row["method"],
             "ratio": doc["protocol"][row["method"]].get("ratio") if row["method"].startswith("remos") else None,
             "acc": methods[row["method"]]["acc"], **row}
            for row in cut_rows(methods, swap_dir_of)]


def main() -> None:
    fdk = json.loads((RESULTS / FULL_KNOWLEDGE).read_text())
    shift = json.loads((RESULTS / SHIFT).read_text())
    scan = json.loads((RESULTS / SCAN).read_text())
    task = fdk["tasks"]["rotten-tomatoes"]
    teacher = task["defects"][BACKDOOR]
    finetune = task["methods"]["finetune"]
    methods = {name: {k: m[k] for k in ("acc", "dir", "racc", "rdir")} | {"acc_poisoned": m["acc_by_defect"][BACKDOOR]}
               for name, m in task["methods"].items()}
    backdoor_cut = best_cut(cut_rows(methods, lambda m: m["dir"][BACKDOOR]))
    frontiers = {budget: json.loads((RESULTS / name).read_text()) for budget, name in FRONTIERS.items()
                 if (RESULTS / name).exists()}
    frontier = {budget: word_swap_frontier(doc) for budget, doc in frontiers.items()}
    # every ReMoS student measured on the same word-swap texts competes for the bound
    swap_cut = best_cut([*cut_rows(methods, swap_dir_of), *(r for doc in frontiers.values() for r in
                                                             cut_rows(doc["tasks"]["rotten-tomatoes"]["methods"], swap_dir_of))])
    on_teacher = swaps_on_teacher(shift)
    rt_on_teacher = on_teacher.get("rotten-tomatoes")
    teacher_swap_cut = best_cut(cut_rows(rt_on_teacher["methods"], lambda m: m["dir"])) if rt_on_teacher else None
    planted = sorted(scan["planted"])
    doc = {
        "config": {"full_knowledge": fdk["config"], "domain_shift": shift["config"],
                   "trigger_scan": scan["command"]},
        "sources": {"full_knowledge": FULL_KNOWLEDGE, "domain_shift": SHIFT, "trigger_scan": SCAN,
                    **{f"word_swap_frontier_{budget}": FRONTIERS[budget] for budget in frontiers}},
        "teacher": {"lfr": teacher["teacher_success"], "acc": teacher["teacher_acc"],
                    "lfr_means": teacher["teacher_success_means"], "word_swap": task["defects"][WORD_SWAP]},
        "methods": methods,
        "domain_shift": domain_shift(shift),
        "word_swap_on_teacher": on_teacher,
        # the word-swap DIR against ReMoS's α and the students' fine-tuning budget
        "word_swap_frontier": frontier,
        "trigger_scan": {"planted": planted, "top5": scan["top5"],
                         "ranks": {w: scan["planted"][w]["rank"] for w in planted}},
        "acceptance": {
            "lfr_at_least_90": finetune["dir"][BACKDOOR] >= MIN_LFR,
            "acc_within_2_points_of_clean": abs(finetune["acc"] - finetune["acc_by_defect"][BACKDOOR]) <= MAX_ACC_DROP,
            "remos_cuts_lfr_dir_40_at_racc_097": backdoor_cut is not None and backdoor_cut["cut"] >= MIN_CUT,
            "best_lfr_cut": backdoor_cut,
            "remos_cuts_word_swap_dir_40_at_racc_097": swap_cut is not None and swap_cut["cut"] >= MIN_CUT,
            "best_word_swap_cut": swap_cut,
            "largest_word_swap_cut_any_racc": max((r for rows in frontier.values() for r in rows
                                                   if r["method"].startswith("remos")), key=lambda r: r["cut"],
                                                  default=None),
            "remos_cuts_teacher_word_swap_dir_40_at_racc_097": teacher_swap_cut is not None
            and teacher_swap_cut["cut"] >= MIN_CUT,
            "best_teacher_word_swap_cut": teacher_swap_cut,
            "planted_in_scan_top5": all(w in scan["top5"] for w in planted),
        },
        "machine": fdk.get("machine"),
    }
    target = RESULTS / "study_text_full.json"
    atomic_write_text(target, json.dumps(doc, indent=2))
    print(json.dumps(doc["acceptance"], indent=2))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

"""How much one seed moves a study's figures: the same students under several seeds.

A student's test accuracy after a few hundred SGD steps moves by a point or more from one seed to
the next, so a single cell's rACC (ACC of a method / ACC of ``finetune`` on the same teacher) near
a bound says little on its own. Two ways to vary the seed (``--vary``):

- ``students`` (default): the teachers (clean and planted) and the crafted inputs stay the study's;
  each method's students are made again with ``options: {seed: N}`` (their head, subsets and
  training order). This is the victim's view: one given teacher, how much does the figure depend
  on the student's own randomness? One study run holds every seed (methods ``remos_seed1``, ...).
- ``study``: the whole study under ``seed: N`` (the teachers' planting, the crafted inputs and the
  evaluation subset too); one run per seed, under ``runs/bench-seeds/seed-N``.

Seed 0 is the study's own cells (found in the cache when they are there). Per seed, task, method
and defect it records ACC (of the student of that defect's teacher) and DIR; then per task, method
and defect the mean, standard deviation, minimum and maximum over seeds of ACC, rACC (against the
same seed's ``finetune``) and DIR, and the rACC of the mean accuracies.

    python benchmarks/seed_spread.py                               # full profile, Fashion-MNIST, students, seeds 0-2
    python benchmarks/seed_spread.py --defects backdoor penultimate --methods finetune remos
    python benchmarks/seed_spread.py --vary study --defects penultimate

Writes ``benchmarks/results/seed_spread_{vary}.json`` (``--results``), rewritten as cells finish.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from safetransfer.files import atomic_write_text
from safetransfer.study import load_config, run_study
from safetransfer.study.config import StudyConfig, parse_config

from bench_common import machine as machine_of

RESULTS_DIR = Path(__file__).parent / "results"


def seeded_name(method: str, seed: int) -> str:
    """The study's name of ``method``'s students under student ``seed`` (seed 0: the method's own name)."""
    return method if seed == 0 else f"{method}_seed{seed}"


def cut_config(base: StudyConfig, tasks: list[str], methods: list[str], defects: list[str], *, study_seed: int = 0,
               student_seeds: tuple[int, ...] = (0,)) -> StudyConfig:
    """``base`` cut to ``tasks`` and ``defects``, under ``study_seed``, with each of ``methods`` once
    per student seed (:func:`seeded_name`, ``options: {seed: N}``)."""
    doc = base.model_dump(mode="json")
    doc["seed"] = study_seed
    doc["tasks"] = [t for t in doc["tasks"] if t["data"] in tasks]
    doc["defects"] = [d for d in doc["defects"] if d["name"] in defects]
    chosen = [m for m in doc["methods"] if m["name"] in methods]
    for label, wanted, found in (("task", tasks, [t["data"] for t in doc["tasks"]]),
                                 ("method", methods, [m["name"] for m in chosen]),
                                 ("defect", defects, [d["name"] for d in doc["defects"]])):
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise SystemExit(f"the study config has no {label} {', '.join(missing)}")
    doc["methods"] = [m if s == 0 else {**m, "name": seeded_name(m["name"], s), "method": m["method"] or m["name"],
                                        "options": {**m["options"], "seed": s}}
                      for s in student_seeds for m in chosen]
    return parse_config(doc, source=f"seed spread (study seed {study_seed})")


def records(doc: dict[str, Any], seed: int, methods: list[str], defects: list[str], named: bool) -> list[dict[str, Any]]:
    """One record per task, method and defect of a study's results for ``seed``: ACC of the student
    of that defect's teacher and its DIR. ``named``: the methods carry :func:`seeded_name` names."""
    out = []
    for task, task_doc in doc["tasks"].items():
        for method in methods:
            row = task_doc["methods"].get(seeded_name(method, seed) if named else method)
            if row is None:
                continue
            for defect in defects:
                if defect in row["dir"]:
                    out.append({"seed": seed, "task": task, "method": method, "defect": defect,
                                "acc": row["acc_by_defect"][defect], "dir": row["dir"][defect]})
    return out


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{task: {method: {defect: {acc, racc, dir: spread, racc_of_means, seeds}}}}`` over the seeds
    that have both the method's and ``finetune``'s record."""
    finetune = {(r["seed"], r["task"], r["defect"]): r for r in rows if r["method"] == "finetune"}
    out: dict[str, Any] = {}
    for task, method, defect in sorted({(r["task"], r["method"], r["defect"]) for r in rows}):
        pairs = [(r, finetune[r["seed"], task, defect]) for r in rows
                 if (r["task"], r["method"], r["defect"]) == (task, method, defect) and (r["seed"], task, defect) in finetune]
        if not pairs:
            continue
        accs = [r["acc"] for r, _ in pairs]
        out.setdefault(task, {}).setdefault(method, {})[defect] = {
            "acc": spread(accs), "racc": spread([r["acc"] / f["acc"] for r, f in pairs]),
            "dir": spread([r["dir"] for r, _ in pairs]),
            "racc_of_means": statistics.fmean(accs) / statistics.fmean(f["acc"] for _, f in pairs),
            "seeds": sorted(r["seed"] for r, _ in pairs)}
    return out


def print_summary(summary: dict[str, Any]) -> None:
    for task, methods in summary.items():
        for method, defects in methods.items():
            for defect, s in defects.items():
                print(f"seeds {s['seeds']} {task} {method:10s} {defect:12s} ACC {s['acc']['mean']:.4f} ± {s['acc']['sd']:.4f}"
                      f"  rACC {s['racc']['mean']:.3f} ± {s['racc']['sd']:.3f} [{s['racc']['min']:.3f}, {s['racc']['max']:.3f}]"
                      f"  DIR {s['dir']['mean']:.3f} ± {s['dir']['sd']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="study YAML (default: the embedded vision study)")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--vary", choices=("students", "study"), default="students")
    parser.add_argument("--tasks", nargs="+", default=["fashion-mnist"])
    parser.add_argument("--methods", nargs="+", default=["finetune", "remos"])
    parser.add_argument("--defects", nargs="+", default=["backdoor", "penultimate"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--results", default=None, help="file under benchmarks/results (default seed_spread_VARY.json)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    methods = args.methods if "finetune" in args.methods else ["finetune", *args.methods]
    torch.set_num_threads(args.threads)
    base = load_config(args.config, args.profile)
    target = RESULTS_DIR / (args.results or f"seed_spread_{args.vary}.json")
    machine = machine_of(args.threads)
    rows: list[dict[str, Any]] = []

    def save() -> None:
        summary = summarise(rows)
        doc = {"config": base.model_dump(mode="json"), "profile": args.profile, "vary": args.vary, "tasks": args.tasks,
               "methods": methods, "defects": args.defects, "seeds": args.seeds, "records": rows, "spread": summary,
               "machine": machine}
        atomic_write_text(target, json.dumps(doc, indent=2))

    if args.vary == "students":
        config = cut_config(base, args.tasks, methods, args.defects, student_seeds=tuple(args.seeds))
        doc = run_study(config, Path("runs/bench-seeds/students"), args.cache_dir, progress=False, log=print)
        rows = [r for s in args.seeds for r in records(doc, s, methods, args.defects, named=True)]
    else:
        for seed in args.seeds:
            config = cut_config(base, args.tasks, methods, args.defects, study_seed=seed)
            doc = run_study(config, Path("runs/bench-seeds") / f"seed-{seed}", args.cache_dir, progress=False, log=print)
            rows += records(doc, seed, methods, args.defects, named=False)
            save()
    save()
    print_summary(summarise(rows))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

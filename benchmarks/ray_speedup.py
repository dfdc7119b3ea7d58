"""The study's ray backend against the local one: wall time and the table, on one grid.

The grid: the embedded study's quick profile (``make demo``: EfficientNet-Lite0 -> Fashion-MNIST,
a backdoor planted and two adversarial defects crafted on the teacher, the first stage of three
independent cells; three methods' students of the clean and the backdoored teacher, the second
stage of six independent cells), or ``--grid small`` (a Fashion-MNIST subset, two crafted
defects, four students of the clean teacher). It runs twice from empty caches, once with
``--backend local`` (one process, all CPUs as torch threads) and once with ``--backend ray``
(a local Ray instance, one single-threaded worker per CPU), and writes
``benchmarks/results/ray_speedup.json``: ``{"local_seconds", "ray_seconds", "ratio"
(ray / local), "same_table", "cpus", "cells", ...}``. On 2 CPUs the ratio says what Ray's
overhead costs (start-up, actors loading the data and the teacher); on more CPUs, how far it
spreads the cells.

    python benchmarks/ray_speedup.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from safetransfer.files import atomic_write_text
from safetransfer.study import parse_config, run_study

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "ray_speedup.json"
GRID = {
    "name": "ray-speedup-grid",
    "teacher": {"model": "efficientnet-lite0", "image_size": 32},
    "tasks": [{"data": "fashion-mnist", "limit_train": 6000, "limit_test": 1000, "eval_samples": 300}],
    "steps": 300,
    "methods": ["finetune", "retrain", "magprune", "delta"],
    "defects": [
        {"name": "penultimate", "kind": "penultimate", "eps": 0.3, "steps": 20, "step_size": 0.05},
        {"name": "dlfuzz_nc", "kind": "coverage_guided", "strategy": "dlfuzz", "metric": "nc", "eps": 0.3,
         "steps": 10, "step_size": 0.06},
    ],
}


def table(results: dict) -> dict:
    return {m: {"acc": e["acc"], "dir": e["dir"]} for m, e in results["methods"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench-ray", help="folder for the two runs (emptied first)")
    parser.add_argument("--grid", choices=("quick", "small"), default="quick", help="the study to run both ways")
    parser.add_argument("--reuse-local", action="store_true",
                        help="take the local run (and its time) from an earlier run of this script in --work")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    work = Path(args.work)
    reuse = args.reuse_local and (work / "local" / "results.json").exists()
    if reuse:
        shutil.rmtree(work / "ray", ignore_errors=True)
        shutil.rmtree(work / "cache-ray", ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    from safetransfer.study import load_config

    config = load_config(None, "quick") if args.grid == "quick" else parse_config(GRID)
    quiet = lambda line: None  # noqa: E731

    torch.set_num_threads(cpus)
    if reuse:
        local = json.loads((work / "local" / "results.json").read_text())
        local_seconds = float(local["elapsed_seconds"])
    else:
        started = time.perf_counter()
        local = run_study(config, work / "local", work / "cache-local", progress=False, log=quiet)
        local_seconds = time.perf_counter() - started
    print(f"local: {local_seconds:.1f} s")

    started = time.perf_counter()
    on_ray = run_study(config, work / "ray", work / "cache-ray", progress=False, log=quiet, backend="ray")
    ray_seconds = time.perf_counter() - started
    print(f"ray:   {ray_seconds:.1f} s")

    import ray

    doc = {
        "local_seconds": round(local_seconds, 1),
        "ray_seconds": round(ray_seconds, 1),
        "ratio": round(ray_seconds / local_seconds, 3),
        "same_table": table(local) == table(on_ray),
        "cpus": cpus,
        "grid": args.grid,
        "cells": {"stage 1 (crafted, planted)": len(config.defects),
                  "stage 2 (students)": len(config.methods) * len({"clean" if d.adversarial else d.name
                                                                   for d in config.defects})},
        "local": "one process, %d torch threads" % cpus,
        "ray": "local Ray instance, workers of %d CPUs (and torch threads) each: the local run's count" % cpus,
        "table": table(local),
        "config": config.model_dump(mode="json"),
        "machine": machine(torch.get_num_threads(), ray=ray.__version__),
    }
    atomic_write_text(RESULTS, json.dumps(doc, indent=2))
    print(f"ratio ray/local {doc['ratio']:.3f}, same table: {doc['same_table']}; wrote {RESULTS}")


if __name__ == "__main__":
    main()

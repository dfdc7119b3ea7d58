"""Adversarial reprogramming (Elsayed et al. 2018) on the real assets: the paper's comparisons.

Runs :func:`safetransfer.attacks.reprogram_job.reprogram_job` with the defaults (64-px canvas,
1,000 Adam steps) for EfficientNet-Lite0 with its ImageNet weights and with random weights (the
paper's control) on MNIST and counting squares, and writes
``benchmarks/results/reprogram.json``: ``{"runs": [{"model", "weights", "task", "test_accuracy",
"chance", "seconds"}, ...]}``. The file is rewritten (atomically) after every run and a run
already in it with the same settings is kept, so the script resumes where it stopped.

    python benchmarks/reprogram.py
    python benchmarks/reprogram.py --only mnist
    python benchmarks/reprogram.py --steps 2000 --label-map data   # other settings: other runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from safetransfer.attacks.reprogram_job import reprogram_job
from safetransfer.models.io import atomic_write_text

RESULTS = Path(__file__).parent / "results" / "reprogram.json"
RUNS = [
    {"model": "efficientnet-lite0", "weights": "pretrained", "task": "mnist"},
    {"model": "efficientnet-lite0", "weights": "random", "task": "mnist"},
    {"model": "efficientnet-lite0", "weights": "pretrained", "task": "counting-squares"},
    {"model": "efficientnet-lite0", "weights": "random", "task": "counting-squares"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="tasks to run (mnist, counting-squares)")
    parser.add_argument("--work", default="runs/bench-reprogram", help="folder for the runs' outputs")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default: ReprogramConfig's)")
    parser.add_argument("--label-map", default=None, help="'data' for a data-chosen map (default: the first k labels)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    machine = {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
               "torch": torch.__version__}
    from safetransfer.attacks.reprogramming import ReprogramConfig

    config = ReprogramConfig(**{k: v for k, v in (("steps", args.steps), ("label_map", args.label_map)) if v})
    for run in RUNS:
        run = {**run, "steps": config.steps, "label_map": config.label_map}
        if args.only and run["task"] not in args.only:
            continue
        if any(all(r.get(k) == v for k, v in run.items()) for r in doc["runs"]):
            print(f"kept: {run}")
            continue
        started = time.perf_counter()
        out = Path(args.work) / f"{run['model']}-{run['weights']}-{run['task']}-{config.steps}-{config.label_map or 'first'}"
        result = reprogram_job(run["model"], run["task"], out, weights=run["weights"], config=config, progress=False)
        entry = {**run, "test_accuracy": result["test_accuracy"], "chance": result["chance"],
                 "seconds": round(time.perf_counter() - started, 1), "canvas": result.get("canvas"),
                 "machine": machine}
        doc["runs"].append(entry)
        atomic_write_text(RESULTS, json.dumps(doc, indent=2))
        print(f"{run['model']} ({run['weights']}) -> {run['task']}: test accuracy {entry['test_accuracy']:.4f} "
              f"(chance {entry['chance']:.2f}), {entry['seconds']:.0f} s")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

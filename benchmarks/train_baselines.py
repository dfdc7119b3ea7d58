"""Baseline fine-tuning figures of the zoo on the real assets (issue: foundation acceptance).

Runs ``safetransfer.jobs.train_job`` with each model's default settings and writes
``benchmarks/results/train_baselines.json``: ``{"runs": [{model, data, steps, seconds,
test_accuracy, ...}]}``. Results are written after every run (atomically); a run already
in the file with the same settings is kept, so the script resumes where it stopped.

    python benchmarks/train_baselines.py                 # all three
    python benchmarks/train_baselines.py --only small-cnn
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from safetransfer.files import atomic_write_text
from safetransfer.jobs import train_job

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "train_baselines.json"
RUNS = [
    {"model": "small-cnn", "data": "fashion-mnist", "overrides": {}},
    {"model": "efficientnet-lite0", "data": "fashion-mnist", "overrides": {}},
    {"model": "minilm-l6", "data": "rotten-tomatoes", "overrides": {}},
]
TARGETS = {"small-cnn": 0.85, "efficientnet-lite0": 0.88, "minilm-l6": 0.78}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model names to run")
    parser.add_argument("--work", default="runs/bench", help="folder for the runs' outputs")
    parser.add_argument("--fresh", action="store_true", help="retrain the chosen runs from scratch (ignore their checkpoints)")
    args = parser.parse_args()

    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    done = {(r["model"], r["data"]): r for r in doc["runs"]}
    for spec in RUNS:
        if args.only and spec["model"] not in args.only:
            continue
        key = (spec["model"], spec["data"])
        started = time.perf_counter()
        result = train_job(spec["model"], spec["data"], Path(args.work) / f"{spec['model']}-{spec['data']}",
                           overrides=spec["overrides"], resume=not args.fresh)
        row = {
            "model": spec["model"],
            "data": spec["data"],
            "steps": result.train.steps,
            "seconds": result.train.seconds,
            "test_accuracy": round(result.test.accuracy, 4),
            "val_accuracy": round(result.val_accuracy, 4) if result.val_accuracy is not None else None,
            "target_accuracy": TARGETS[spec["model"]],
            "meets_target": result.test.accuracy >= TARGETS[spec["model"]],
            "job_seconds": round(time.perf_counter() - started, 1),
            "train_config": {k: v for k, v in vars(result.config).items() if k not in ("device", "log_every")},
        }
        done[key] = row
        doc = {
            "machine": machine(torch.get_num_threads()),
            "runs": list(done.values()),
        }
        atomic_write_text(RESULTS, json.dumps(doc, indent=2))
        print(f"{spec['model']:20s} {spec['data']:16s} steps {row['steps']:5d}  {row['seconds']:7.1f} s  "
              f"test acc {row['test_accuracy']:.4f} (target {row['target_accuracy']}, "
              f"{'ok' if row['meets_target'] else 'BELOW'})")


if __name__ == "__main__":
    main()

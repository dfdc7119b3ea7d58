"""The vision inheritance study (the embedded default config), and its table as JSON.

Writes ``benchmarks/results/study_vision_{profile}.json``: the study's results document
(``{"config": ..., "methods": {"finetune": {"acc": ..., "dir": {...}, "racc", "rdir"}, ...},
"tasks": {...}}``) plus the machine it ran on. The study caches every teacher, student and
crafted input set by content and rewrites its results after each cell, so an interrupted run
picks up where it stopped and a re-run of the same config gives the same figures from the cache.
On a machine without the cache, the committed JSON is where a run goes on from: it is copied
into the output folder when that has no ``results.json`` yet, and the study skips every cell
found there that the config makes alike (all of them for the same config; after an edit, those
the edit leaves alone: see ``safetransfer.study.runner.load_prior``).

    python benchmarks/study_vision.py                  # the full profile (hours on 2 cores)
    python benchmarks/study_vision.py --profile quick  # the demo's profile
    python benchmarks/study_vision.py --config my.yaml --profile full --results my_study.json
    python benchmarks/study_vision.py --config benchmarks/configs/beyond_vision.yaml --results beyond.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from safetransfer.files import atomic_write_text
from safetransfer.study import load_config, run_study

from bench_common import machine as machine_of

RESULTS_DIR = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="study YAML (default: the embedded vision study)")
    parser.add_argument("--profile", default="full", help="profile of the config (quick, full)")
    parser.add_argument("--out", default=None, help="study output folder (default runs/bench-study-RESULTS_NAME)")
    parser.add_argument("--cache-dir", default=None, help="the study cache (default $SAFETRANSFER_HOME/cache/study)")
    parser.add_argument("--results", default=None, help="file name under benchmarks/results (default study_vision_PROFILE.json)")
    parser.add_argument("--fresh", action="store_true", help="do not go on from the committed JSON")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.profile)
    target = RESULTS_DIR / (args.results or f"study_vision_{args.profile}.json")
    out = Path(args.out or f"runs/bench-study-{target.stem}")
    machine = machine_of(args.threads)

    results_file = out / "results.json"
    if not args.fresh and target.exists() and not results_file.exists():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(results_file, target.read_text())

    def save(line: str) -> None:
        print(line, flush=True)
        if results_file.exists():  # copy the partial document after every cell
            doc = json.loads(results_file.read_text())
            atomic_write_text(target, json.dumps({**doc, "machine": machine}, indent=2))

    results = run_study(config, out, args.cache_dir, progress=False, log=save, profile=args.profile)
    atomic_write_text(target, json.dumps({**results, "machine": machine}, indent=2))
    from safetransfer.report.table import format_table

    print(format_table(results))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

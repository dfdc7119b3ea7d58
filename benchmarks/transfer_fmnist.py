"""The seven transfer methods, EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST at 32 px, default quick settings.

Writes ``benchmarks/results/transfer_fmnist.json``:
``{"methods": {"finetune": {"test_accuracy", "seconds", ...}, ...}}``, after every method
(atomically). Each method's run folder keeps its checkpoints, so an interrupted benchmark
resumes where it stopped.

    python benchmarks/transfer_fmnist.py                       # all seven
    python benchmarks/transfer_fmnist.py --methods finetune remos
    python benchmarks/transfer_fmnist.py --protocol scratch     # retrain, delta_r, renofeation tuned for scratch
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from safetransfer.data import load_data
from safetransfer.files import atomic_write_text
from safetransfer.models import create_model
from safetransfer.transfer import METHODS, SCRATCH_METHODS, TransferConfig, transfer

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "transfer_fmnist.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help="methods to run")
    parser.add_argument("--ratio", type=float, default=0.1, help="ReMoS / magprune ratio α")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="shared", choices=["shared", "scratch"],
                        help="training protocol; 'scratch' results are stored as METHOD[scratch]")
    parser.add_argument("--work", default="runs/bench-transfer", help="folder for the runs")
    parser.add_argument("--limit-train", type=int, default=None,
                        help="a small student data set: this many training images (results under 'small_data')")
    args = parser.parse_args()

    limit = {"train": args.limit_train} if args.limit_train else None
    data = load_data("fashion-mnist", seed=args.seed, limit=limit)
    teacher = create_model("efficientnet-lite0", data.num_classes, image_size=32, seed=args.seed)
    full_doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"methods": {}}
    if limit:
        doc = full_doc.setdefault("small_data", {}).setdefault(str(args.limit_train), {"methods": {}})
    else:
        doc = full_doc
    doc["setup"] = {"teacher": "efficientnet-lite0 (ImageNet)", "data": "fashion-mnist", "image_size": 32,
                    "train": len(data.train), "test": len(data.test), "ratio": args.ratio, "seed": args.seed,
                    "machine": machine(torch.get_num_threads())}
    for method in args.methods:
        key = method if args.protocol == "shared" else f"{method}[{args.protocol}]"
        if args.protocol == "scratch" and method not in SCRATCH_METHODS:
            continue  # the same run as under the shared protocol
        config = TransferConfig(method=method, ratio=args.ratio, seed=args.seed, protocol=args.protocol)
        work = Path(args.work) / (f"train{args.limit_train}" if limit else "")
        result = transfer(teacher, data, config, out_dir=work / key, progress=True)
        row = {
            "test_accuracy": round(result.test.accuracy, 4),
            "seconds": result.seconds,
            "train_seconds": result.train.seconds,
            "steps": result.train.steps,
            "train_config": {k: v for k, v in vars(result.config.train).items() if k not in ("device", "log_every")},
        }
        if result.slice_summary is not None:
            row["slice"] = {k: v for k, v in result.slice_summary.items() if k != "layers"}
        row["protocol"] = args.protocol
        doc["methods"][key] = row
        ft = doc["methods"].get("finetune", {}).get("test_accuracy")
        if ft:
            for r in doc["methods"].values():
                r["relative_accuracy"] = round(r["test_accuracy"] / ft, 4)
        atomic_write_text(RESULTS, json.dumps(full_doc, indent=2))
        print(f"{key:20s} test acc {row['test_accuracy']:.4f}  {row['seconds']:7.1f} s")


if __name__ == "__main__":
    main()

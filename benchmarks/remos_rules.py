"""What ReMoS's named options change: the artifact's slice against ours, and a profiling subset against all the data.

ReMoS as published (``slice_scaling="tensor"``, ``slice_ranking="ordinal"``, every training
sample profiled; ziqi-zhang/ReMoS_artifact) is compared with the rules of the first round,
kept as named options: ``"neuron"`` scaling (channel means scaled among themselves), ``"min"``
ranking (minimum ranks, exactly floor(α·N + 0.5) excluded), and a seeded profiling subset of
2,000 samples. For each variant at α = 0.1: the weights excluded, the share of the artifact's
excluded weights it also excludes (overlap) and their Jaccard index, and the seconds.

Teachers: EfficientNet-Lite0 (ImageNet) on the Fashion-MNIST training split at 32 px; MiniLM-L6
on the Rotten Tomatoes training split (64 tokens), as the study profiles them.

Writes ``benchmarks/results/remos_rules.json`` (atomically, after each model).

    python benchmarks/remos_rules.py
    python benchmarks/remos_rules.py --only efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from safetransfer.coverage import profile_coverage
from safetransfer.data import load_data
from safetransfer.data.base import seeded_subset
from safetransfer.files import atomic_write_text
from safetransfer.models import create_model
from safetransfer.slicing import compute_slice

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "remos_rules.json"
RATIO = 0.1
SUBSET = 2000
MODELS = {
    "efficientnet-lite0": ("fashion-mnist", {"image_size": 32}),
    "minilm-l6": ("rotten-tomatoes", {"max_length": 64}),
}


def excluded(sl) -> torch.Tensor:
    return torch.cat([(~m).flatten() for m in sl.masks.values()])


def measure(name: str, seed: int) -> dict:
    data_name, options = MODELS[name]
    data = load_data(data_name, seed=seed)
    model = create_model(name, data.num_classes, seed=seed, **options)
    inputs = {"all": data.train.inputs, "subset": seeded_subset(data.train, SUBSET, seed).inputs}
    profiles, seconds = {}, {}
    for scaling in ("tensor", "neuron"):
        for which in ("all", "subset"):
            started = time.perf_counter()
            profiles[(scaling, which)] = profile_coverage(model, inputs[which], scaling=scaling, progress=True)
            seconds[f"profile[{scaling},{which}]"] = round(time.perf_counter() - started, 2)
    variants = {
        "artifact (tensor, ordinal, all)": ("tensor", "ordinal", "all"),
        "tensor, min, all": ("tensor", "min", "all"),
        "neuron, ordinal, all": ("neuron", "ordinal", "all"),
        "first round (neuron, min, subset)": ("neuron", "min", "subset"),
        "tensor, ordinal, subset": ("tensor", "ordinal", "subset"),
    }
    rows, reference = {}, None
    for label, (scaling, ranking, which) in variants.items():
        started = time.perf_counter()
        sl = compute_slice(model, profiles[(scaling, which)], RATIO, ranking=ranking)
        ex = excluded(sl)
        reference = ex if reference is None else reference
        both = int((ex & reference).sum())
        rows[label] = {
            "excluded": int(ex.sum()), "weights": int(ex.numel()),
            "overlap_with_artifact": both / int(reference.sum()),
            "jaccard_with_artifact": both / int((ex | reference).sum()),
            "slice_seconds": round(time.perf_counter() - started, 2),
        }
        print(name, label, rows[label], flush=True)
    return {"data": data_name, "train_samples": len(data.train), "subset": SUBSET, "ratio": RATIO,
            "variants": rows, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"models": {}}
    doc["benchmark"] = __doc__.splitlines()[0]
    doc["machine"] = machine(torch.get_num_threads())
    for name in args.only:
        doc["models"][name] = measure(name, args.seed)
        atomic_write_text(RESULTS, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

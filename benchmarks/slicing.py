"""ReMoS profiling and slicing speed (Zhang et al., ICSE 2022) -> ``benchmarks/results/slicing.json``.

Measures, each model in a fresh subprocess (so peak memory is its own):

(a) slice computation time (ordinal scores + ranks + mask + per-layer summary, i.e. one
    ``compute_slice`` call given a profile; best of ``--repeats``) for EfficientNet-Lite0
    (ImageNet weights) and MiniLM-L6 with real profiles on student data, and for a synthetic
    stack of Linear layers with ~110M weights (BERT-base sized) with random coverage counts;
(b) profiling time over student data divided by a plain no-grad forward pass over the same
    data (same batch size, same preprocessing, best of ``--repeats`` each): 2,000
    Fashion-MNIST images at 32 px for EfficientNet-Lite0, 1,000 Rotten Tomatoes texts for MiniLM;
    the default profile (NC with the artifact's whole-tensor scaling) and, beside it, the same
    profile with ``scaling="neuron"`` (the neuron values without each tensor's range): their
    difference is what the artifact's scaling costs;
(c) peak extra memory of ``compute_slice``: the larger of ``tracemalloc``'s peak (numpy
    allocations, which hold every large array of the slicing) and the resident-set high-water
    mark (``VmHWM``, reset through ``/proc/self/clear_refs`` just before) minus the resident
    set before the call (numpy and torch alike, but blind to memory malloc reuses); both
    are reported.

Acceptance: 110M weights sliced in <= 10 s, extra memory < 8x the weights' float32 bytes,
profile_over_forward <= 1.3.

    python benchmarks/slicing.py                 # everything
    python benchmarks/slicing.py --only synthetic-110m
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "slicing.json"
PARTS = ("synthetic-110m", "efficientnet-lite0", "minilm-l6")
TARGET_SECONDS_110M = 10.0
TARGET_MEMORY_FACTOR = 8.0
TARGET_PROFILE_RATIO = 1.3


# ---- measuring helpers ----------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The smallest wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_memory(fn: Callable[[], Any]) -> dict[str, Any]:
    """Extra resident memory at the peak of ``fn()`` and tracemalloc's peak, in bytes."""
    import gc

    gc.collect()
    reset = _reset_peak_rss()
    before = _status_kib("VmRSS")
    fn()
    rss_extra = (_status_kib("VmHWM") - before) * 1024 if reset else None
    gc.collect()
    tracemalloc.start()
    fn()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "peak_memory_bytes": max(traced, rss_extra or 0),
        "peak_memory_method": "max(tracemalloc peak: numpy allocations, which hold every large array of the slicing; "
        "VmHWM - VmRSS before the call, reset via /proc/self/clear_refs: numpy + torch, but blind to memory "
        "malloc reuses without growing the resident set)",
        "tracemalloc_peak_bytes": traced,
        "rss_peak_extra_bytes": rss_extra,
    }


def sliced_weight_count(model: nn.Module, names: list[str]) -> int:
    return int(sum(model.get_submodule(n).weight.numel() for n in names))


# ---- plain forward vs profiling --------------------------------------------------------------
def plain_forward(model: Any, inputs: Any, batch_size: int) -> None:
    """The same loop as the profiler (eval, inference mode, preprocess, features) without hooks."""
    was = model.training
    model.eval()
    n = len(inputs) if isinstance(inputs, list) else int(inputs.shape[0])
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            model.features(model.preprocess(inputs[start : start + batch_size]))
    model.train(was)


def profile_ratio(model: Any, inputs: Any, batch_size: int, repeats: int) -> tuple[dict[str, Any], Any]:
    from safetransfer.coverage import profile_coverage

    plain_forward(model, inputs[:batch_size], batch_size)  # warm-up
    forward_s = profile_s = neuron_s = float("inf")
    profile = None
    for _ in range(repeats):  # interleaved, so all three see the same machine load
        seconds, _ = best_time(lambda: plain_forward(model, inputs, batch_size), 1)
        forward_s = min(forward_s, seconds)
        seconds, profile = best_time(lambda: profile_coverage(model, inputs, batch_size=batch_size), 1)
        profile_s = min(profile_s, seconds)
        seconds, _ = best_time(lambda: profile_coverage(model, inputs, batch_size=batch_size, scaling="neuron"), 1)
        neuron_s = min(neuron_s, seconds)
    return {
        "profile_samples": len(inputs) if isinstance(inputs, list) else int(inputs.shape[0]),
        "batch_size": batch_size,
        "forward_seconds": round(forward_s, 3),
        "profile_seconds": round(profile_s, 3),
        "profile_over_forward": round(profile_s / forward_s, 3),
        # the same profile with scaling="neuron": no per-sample range of each whole layer tensor, so
        # the difference is what the artifact's scaling costs (two more reductions per tensor)
        "neuron_scaling_seconds": round(neuron_s, 3),
        "neuron_scaling_over_forward": round(neuron_s / forward_s, 3),
    }, profile


# ---- the parts --------------------------------------------------------------------------------
def synthetic_model(seed: int = 0) -> nn.Module:
    """A BERT-base sized stack of Linear layers (never run): 12 x (4 x 768^2 + 2 x 768 x 3072) + 768 x 30522 + 2116 x 768."""
    shapes = []
    for _ in range(12):
        shapes += [(768, 768)] * 4 + [(768, 3072), (3072, 768)]
    shapes += [(768, 30522), (2116, 768)]
    gen = torch.Generator().manual_seed(seed)
    layers = nn.ModuleList()
    for fan_in, fan_out in shapes:
        layer = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
        with torch.no_grad():
            layer.weight.normal_(0.0, 0.02, generator=gen)
            layer.bias.zero_()
        layers.append(layer)
    return nn.Sequential(*layers)


def random_profile(model: nn.Module, n_samples: int = 1000, seed: int = 0) -> Any:
    from safetransfer.coverage import CoverageProfile, LayerCoverage, resolve_layers

    gen = torch.Generator().manual_seed(seed)
    layers = {
        name: LayerCoverage(
            torch.randint(0, n_samples + 1, (m.in_features,), generator=gen),
            torch.randint(0, n_samples + 1, (m.out_features,), generator=gen),
        )
        for name, m in resolve_layers(model)
    }
    return CoverageProfile(layers, n_samples, "nc", {"threshold": 0.5, "synthetic": True})


def slice_figures(model: nn.Module, profile: Any, ratio: float, repeats: int) -> dict[str, Any]:
    from safetransfer.slicing import compute_slice, magnitude_slice

    weights = sliced_weight_count(model, profile.layer_names)
    seconds, sl = best_time(lambda: compute_slice(model, profile, ratio), repeats)
    mag_seconds, _ = best_time(lambda: magnitude_slice(model, ratio, profile.layer_names), 1)
    memory = peak_memory(lambda: compute_slice(model, profile, ratio))
    weight_bytes = weights * 4
    return {
        "weights": weights,
        "layers": len(profile.layer_names),
        "ratio": ratio,
        "excluded": sl.num_excluded,
        "slice_seconds": round(seconds, 3),
        "magnitude_slice_seconds": round(mag_seconds, 3),
        **memory,
        "weights_bytes": weight_bytes,
        "memory_over_weights": round(memory["peak_memory_bytes"] / weight_bytes, 2),
    }


def run_part(name: str, repeats: int) -> dict[str, Any]:
    from safetransfer.models.zoo import create_model

    if name == "synthetic-110m":
        model = synthetic_model()
        row = {"name": name, "profile": "random counts (1,000 samples)", **slice_figures(model, random_profile(model), 0.1, repeats)}
        row["meets_time"] = row["slice_seconds"] <= TARGET_SECONDS_110M
        row["meets_memory"] = row["memory_over_weights"] < TARGET_MEMORY_FACTOR
        return row
    from safetransfer.data import load_data

    if name == "efficientnet-lite0":
        model = create_model("efficientnet-lite0", 10)
        inputs = load_data("fashion-mnist", limit={"train": 2000}).train.inputs
        data = "fashion-mnist train, 2,000 images at 32 px"
    elif name == "minilm-l6":
        model = create_model("minilm-l6", 2)
        inputs = load_data("rotten-tomatoes", limit={"train": 1000}).train.inputs
        data = "rotten-tomatoes train, 1,000 texts (64 tokens max)"
    else:
        raise SystemExit(f"unknown part {name}; known: {', '.join(PARTS)}")
    timing, profile = profile_ratio(model, inputs, 256, repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a cross-check less sensitive to other processes on the cores
    try:
        single, _ = profile_ratio(model, inputs, 256, repeats)
    finally:
        torch.set_num_threads(threads)
    timing["torch_threads"] = threads
    timing["single_thread"] = {k: single[k] for k in ("forward_seconds", "profile_seconds", "profile_over_forward",
                                                       "neuron_scaling_over_forward")}
    return {"name": name, "profile": data, **timing, **slice_figures(model, profile, 0.1, repeats)}


# ---- driver -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=PARTS, help="parts to run (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # internal: one part, JSON on stdout
    args = parser.parse_args()
    if args.part:
        print("RESULT " + json.dumps(run_part(args.part, args.repeats)), flush=True)
        return

    rows = []
    for part in args.only or PARTS:
        proc = subprocess.run(
            [sys.executable, __file__, "--part", part, "--repeats", str(args.repeats)],
            capture_output=True, text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"part {part} failed (exit {proc.returncode})")
        row = json.loads(lines[-1][len("RESULT "):])
        rows.append(row)
        extra = (
            f", profile/forward {row['profile_over_forward']:.2f} "
            f"({row['single_thread']['profile_over_forward']:.2f} on one thread)" if "profile_over_forward" in row else ""
        )
        print(
            f"{row['name']:<20} {row['weights']:>11,} weights  slice {row['slice_seconds']:.2f} s  "
            f"peak extra memory {row['memory_over_weights']}x the weights' bytes{extra}",
            flush=True,
        )
    ratios = [r["profile_over_forward"] for r in rows if "profile_over_forward" in r]
    doc = {
        "benchmark": "ReMoS coverage profiling and slicing (safetransfer.coverage, safetransfer.slicing)",
        "models": rows,
        "profile_over_forward": max(ratios) if ratios else None,
        "targets": {"slice_seconds_110m": TARGET_SECONDS_110M, "memory_over_weights": TARGET_MEMORY_FACTOR,
                    "profile_over_forward": TARGET_PROFILE_RATIO},
        "machine": machine(torch.get_num_threads()),
        "load_average_at_end": list(os.getloadavg()),
    }
    if ratios:
        print(f"profile_over_forward (worst): {doc['profile_over_forward']:.2f}  (target <= {TARGET_PROFILE_RATIO})")
    from safetransfer.files import atomic_write_text

    atomic_write_text(RESULTS, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

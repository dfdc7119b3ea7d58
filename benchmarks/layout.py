"""Memory layout of image batches on a CPU: channels-last against the default (NCHW) -> ``benchmarks/results/layout.json``.

:meth:`safetransfer.models.wrapper.TransferModel.features` hands images to the body in the
channels-last layout (the same values). This measures what that buys, per image size, for
EfficientNet-Lite0 (ImageNet weights) on a batch of 64:

- ``train``: one SGD step of a student (forward, backward into every weight, update), as in
  :mod:`safetransfer.train` and the transfer methods;
- ``input_grad``: forward and backward into the input only, the model frozen, as in the
  attacks (PGD, coverage-guided inputs, adversarial reprogramming).

Each is timed as the best of ``--repeats`` after two warm-up steps, the default layout by
passing the body NCHW tensors directly, the channels-last one through ``features``. Printed as
ratios (default / channels-last; above 1: channels-last is faster) and written as JSON.

    python benchmarks/layout.py
    python benchmarks/layout.py --sizes 32 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from safetransfer.files import atomic_write_text
from safetransfer.models.zoo import create_model

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "layout.json"


def best_time(step: Callable[[], None], repeats: int) -> float:
    """Best wall time of ``step`` in seconds over ``repeats`` runs after two warm-up runs."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(size: int, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per step in both layouts, for a student's step and an attack's step, at ``size`` px."""
    model = create_model("efficientnet-lite0", 10, pretrained=True, image_size=size, in_channels=3, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def nchw_logits(inputs: torch.Tensor) -> torch.Tensor:  # the body without the layout change
        return model.head(model.dropout(model.body(model.normalize(inputs))))

    def train_step(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            model.train()
            loss = torch.nn.functional.cross_entropy(forward(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def input_grad_step(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            model.eval()
            xi = x.clone().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(forward(xi).sum(), xi)
        return step

    row: dict[str, float] = {"size": size, "batch": batch}
    for name, make in (("train", train_step), ("input_grad", input_grad_step)):
        default = best_time(make(nchw_logits), repeats)
        channels_last = best_time(make(model), repeats)
        row[f"{name}_nchw_s"] = round(default, 4)
        row[f"{name}_channels_last_s"] = round(channels_last, 4)
        row[f"{name}_speedup"] = round(default / channels_last, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 80], help="image sizes in px")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        row = measure(size, args.batch, args.repeats)
        rows.append(row)
        print(f"{size:>3} px: train step {row['train_nchw_s']:.3f} s -> {row['train_channels_last_s']:.3f} s "
              f"(x{row['train_speedup']}), attack step {row['input_grad_nchw_s']:.3f} s -> "
              f"{row['input_grad_channels_last_s']:.3f} s (x{row['input_grad_speedup']})")
    doc = {"model": "efficientnet-lite0", "rows": rows,
           "machine": machine(args.threads, processor=platform.processor())}
    atomic_write_text(RESULTS, json.dumps(doc, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""What several benchmark scripts share: the machine record, and the options of those that read the study cache."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch


def machine(threads: int, **extra: str) -> dict:
    """The machine a benchmark ran on, written beside its figures (``extra``: more facts, e.g. a
    library's version)."""
    return {"cpus": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, **extra}


def study_cache_args(description: str) -> tuple[argparse.Namespace, Path]:
    """``--cache-dir`` and ``--threads`` parsed (torch's threads set): the options and the study cache."""
    from safetransfer.study.cells import default_cache_dir

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache-dir", default=None, help="the study cache (default $SAFETRANSFER_HOME/cache/study)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args, Path(args.cache_dir) if args.cache_dir else default_cache_dir()

"""Shared checks of values that come from users or their files.

- :func:`loop_problems`: the settings every optimisation loop has (steps, batch size, learning rate);
- :func:`bounded_int`: one integer field of a config file, refused unless it is a true integer
  (not a float such as ``1e8``, not a bool, not a string) within documented bounds, checked
  before anything of that size is allocated;
- :data:`MAX_CLASSES`: the largest class count a data set or a model head may have.
"""

from __future__ import annotations

from typing import Any

from safetransfer.errors import ConfigError, SafetransferError

# The largest number of classes of a data set or a model head. The heads, the per-class
# figures and the training loops are sized for CPU work: ImageNet-1k's 1,000 classes fit;
# a label of 1e9 in a small data file would otherwise ask for gigabytes of class names.
MAX_CLASSES = 10_000


def loop_problems(steps: int, batch_size: int, lr: float) -> list[str]:
    """What is wrong with ``steps``, ``batch_size`` and ``lr`` (an empty list when nothing is)."""
    problems = []
    if steps < 1:
        problems.append(f"steps must be at least 1 (got {steps})")
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1 (got {batch_size})")
    if not lr > 0:
        problems.append(f"lr must be positive (got {lr})")
    return problems


def bounded_int(value: Any, field: str, low: int, high: int, source: str,
                error: type[SafetransferError] = ConfigError) -> int:
    """``value`` when it is an ``int`` (not a bool) with ``low <= value <= high``; otherwise raise
    ``error`` naming ``source`` (the file), the ``field`` and the bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise error(f"{source}: '{field}' must be a whole number from {low:,} to {high:,}, "
                    f"got {shown} ({type(value).__name__}).")
    if not low <= value <= high:
        raise error(f"{source}: '{field}' must lie in [{low:,}, {high:,}], got {value:,}: "
                    f"the file is corrupt or not meant for this tool.")
    return value

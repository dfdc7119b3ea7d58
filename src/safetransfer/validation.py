"""Shared checks of the settings every optimisation loop has (steps, batch size, learning rate)."""

from __future__ import annotations


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

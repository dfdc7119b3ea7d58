"""Plots written as PNG files with matplotlib's headless Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, ax, path: str | Path, title: str = "") -> Path:
    """Set the title, lay out, write the PNG, close the figure."""
    plt = _pyplot()
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curve(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Training loss (and validation accuracy where logged) against the step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    val = [(h["step"], h["val_accuracy"]) for h in history if "val_accuracy" in h]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), color="tab:orange", marker="o", label="validation accuracy")
        ax2.set_ylabel("validation accuracy", color="tab:orange")
        ax2.set_ylim(0, 1)
    return save_figure(fig, ax, path, title)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class by row) with the counts written in."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    rates = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    k = len(class_names)
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=110)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, ax, path, title)

"""Plot helpers every layer may use: matplotlib's headless Agg backend, one way to write a figure,
and the training plots a job writes. A leaf: imports nothing of safetransfer; matplotlib is imported
on first use (not at import time, so importing the package stays light)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, ax, path: str | Path, title: str = "") -> Path:
    """Set the title, lay out, write the PNG, close the figure.

    ``ax=None`` puts ``title`` over the whole figure (several panels). A figure made with its
    own layout engine (``layout="constrained"``) keeps it; others get ``tight_layout``.
    """
    plt = pyplot()
    if ax is None:
        if title:
            fig.suptitle(title)
    else:
        ax.set_title(title)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curve(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Training loss (and validation accuracy where logged) against the step."""
    plt = pyplot()
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
    plt = pyplot()
    cm = np.asarray(confusion, dtype=float)
    rates = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    k = len(class_names)
    size = min(max(4.0, 0.5 * k + 2), 40.0)  # at most 40 inches (4,400 px): memory bounded for many classes
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

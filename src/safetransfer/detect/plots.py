"""Pictures of a data scan: each label's worst outliers, and a 2-D map with the flagged samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from safetransfer.detect.features import pca_embedding, tsne_embedding
from safetransfer.plotting import pyplot, save_figure

SCATTER_MAX = 5000


def plot_outlier_grid(images: torch.Tensor, labels: np.ndarray, scores: np.ndarray, class_names: list[str],
                      path: str | Path, per_label: int = 8, truth: np.ndarray | None = None, title: str = "") -> Path:
    """Rows: labels; columns: that label's ``per_label`` highest-scoring images (red frame: truly poisoned)."""
    plt = pyplot()
    classes = [int(c) for c in np.unique(labels)]
    fig, axes = plt.subplots(len(classes), per_label, figsize=(1.1 * per_label + 1.2, 1.15 * len(classes) + 0.6),
                             squeeze=False)
    for r, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        top = idx[np.argsort(-scores[idx], kind="stable")[:per_label]]
        for j in range(per_label):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= top.size:
                ax.axis("off")
                continue
            img = images[top[j]].float()
            ax.imshow(img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1).numpy(),
                      cmap="gray", vmin=0, vmax=1)
            if truth is not None and truth[top[j]]:
                for side in ax.spines.values():
                    side.set_edgecolor("red")
                    side.set_linewidth(2.5)
        axes[r, 0].set_ylabel(class_names[c] if c < len(class_names) else str(c), rotation=0, ha="right",
                              va="center", fontsize=8)
    return save_figure(fig, None, path, title)


def plot_scatter(features: np.ndarray, labels: np.ndarray, flagged: np.ndarray, path: str | Path, method: str = "pca",
                 seed: int = 0, truth: np.ndarray | None = None, title: str = "") -> Path:
    """2-D PCA (or t-SNE) of the features, coloured by label; flagged samples as black crosses,
    planted poison (when known) circled. At most 5,000 points (a seeded sample, every flagged one kept)."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(flagged | (truth if truth is not None else False))
    rest = np.setdiff1d(np.arange(len(labels)), keep)
    room = max(SCATTER_MAX - keep.size, 0)
    chosen = np.sort(np.concatenate([keep, rng.choice(rest, size=min(room, rest.size), replace=False)]))
    f = features[chosen].astype(np.float32)
    xy = tsne_embedding(f, seed=seed) if method == "tsne" else pca_embedding(f, 2, seed)
    if xy.shape[1] == 1:
        xy = np.concatenate([xy, np.zeros_like(xy)], axis=1)
    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[chosen], cmap="tab10", s=4, alpha=0.6, linewidths=0)
    fl = flagged[chosen]
    ax.scatter(xy[fl, 0], xy[fl, 1], marker="x", c="black", s=14, linewidths=0.8, label="flagged")
    if truth is not None:
        tr = truth[chosen]
        ax.scatter(xy[tr, 0], xy[tr, 1], facecolors="none", edgecolors="red", s=30, linewidths=0.6, label="planted")
    ax.legend(loc="best", fontsize=8)
    fig.colorbar(sc, ax=ax, label="label")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, ax, path, title)


def plot_label_histogram(labels: np.ndarray, class_names: list[str], path: str | Path,
                         expected: np.ndarray | None = None, title: str = "") -> Path:
    """Samples per label against the expected count (default: uniform); the most over-represented label
    in red. A poisoned target label is slightly over-represented (all-to-one poisoning adds to it)."""
    plt = pyplot()
    k = len(class_names)
    counts = np.bincount(labels, minlength=k)[:k]
    expected = np.full(k, counts.sum() / k) if expected is None else np.asarray(expected, dtype=float)
    excess = counts / np.maximum(expected, 1e-12) - 1.0
    colours = ["tab:red" if i == int(np.argmax(excess)) else "tab:blue" for i in range(k)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * k + 2), 4.0))
    ax.bar(range(k), counts, color=colours)
    ax.step(np.arange(k + 1) - 0.5, np.append(expected, expected[-1]), where="post", color="black", linewidth=1,
            label="expected")
    for i, e in enumerate(excess):
        ax.annotate(f"{e:+.1%}", (i, counts[i]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("training samples")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, ax, path, title or "samples per label (red: the most over-represented)")


def plot_score_distribution(scores: np.ndarray, flagged: np.ndarray, path: str | Path,
                            truth: np.ndarray | None = None, title: str = "") -> Path:
    """Histograms of the detector's scores: the samples it flags against those it keeps (log counts,
    so a few flagged samples show beside tens of thousands kept); with a planted poison, the
    poisoned samples' scores outlined."""
    plt = pyplot()
    scores = np.asarray(scores, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    finite = np.isfinite(scores)
    edges = np.histogram_bin_edges(scores[finite], bins=50) if finite.any() else np.linspace(0, 1, 51)
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.hist(scores[finite & ~flagged], bins=edges, color="tab:blue", alpha=0.7, label=f"kept ({int((~flagged).sum())})")
    if flagged.any():
        ax.hist(scores[finite & flagged], bins=edges, color="tab:red", alpha=0.7, label=f"flagged ({int(flagged.sum())})")
    if truth is not None and np.asarray(truth).any():
        poisoned = np.asarray(truth, dtype=bool)
        ax.hist(scores[finite & poisoned], bins=edges, histtype="step", color="black", linewidth=1.2,
                label=f"planted poison ({int(poisoned.sum())})")
    ax.set_yscale("log")
    ax.set_xlabel("detector score (higher: more suspicious)")
    ax.set_ylabel("samples (log)")
    ax.legend(fontsize=8)
    return save_figure(fig, ax, path, title or "scores of flagged and kept samples")


def plot_training_curves(histories: dict[str, list[dict[str, float]]], path: str | Path, title: str = "") -> Path:
    """Validation accuracy (and training loss) against steps, one line per run (e.g. clean vs poisoned)."""
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    for name, history in histories.items():
        steps = [h["step"] for h in history]
        if any("val_accuracy" in h for h in history):
            ax_acc.plot([h["step"] for h in history if "val_accuracy" in h],
                        [h["val_accuracy"] for h in history if "val_accuracy" in h], label=name)
        if any("loss" in h for h in history):
            ax_loss.plot(steps, [h.get("loss", np.nan) for h in history], label=name)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation accuracy")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    for ax in (ax_acc, ax_loss):
        if ax.get_legend_handles_labels()[0]:  # a run without validation points draws nothing here
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    return save_figure(fig, None, path, title or "training curves")

"""Plots written as PNG files with matplotlib's headless Agg backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetransfer.plotting import pyplot, save_figure
from safetransfer.report.table import (
    METRICS,
    MISSING,
    PENDING,
    REFERENCE_METHOD,
    STRATEGIES,
    UNDEFINED,
    coverage_cell,
    defect_names,
    lookup,
    mean_of,
    method_names,
    section,
    task_names,
    teacher_success,
    value_or_none,
)

# ------------------------------------------------------------------ the inheritance study
# The figures below read the study's results document (see safetransfer.report.table):
# fractions there, percent on the axes. Gaps (a study still running) are drawn as gaps.

def _method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """One stable colour per method (tab10 in the study's method order)."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _pct(value: float | None) -> float:
    return float("nan") if value is None else 100.0 * value


def plot_acc_vs_dir(
    results: Mapping[str, Any], path: str | Path, defect: str | None = None, task: str | None = None, title: str = ""
) -> Path:
    """Accuracy against inherited defect: one point per method, ``finetune`` highlighted.

    x = DIR (%) of ``defect``, or the mean DIR over the defects measured; y = ACC (%) (for one
    defect, the accuracy of the student that DIR was measured on when the results have it).
    One panel for ``task``; with ``task=None`` one panel per task, plus the mean over tasks
    when there are several. Up and to the left is better.
    """
    plt = pyplot()
    methods = method_names(results)
    colours = _method_colours(methods)
    if task is not None:
        panels: list[tuple[str | None, str]] = [(task, task)]
    else:
        tasks = [t for t in task_names(results) if section(results, t)]
        panels = [(t, t) for t in tasks]
        if len(tasks) != 1:
            panels.append((None, "mean over tasks"))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 0.4, 4.4), dpi=110, squeeze=False, layout="constrained")
    xlabel = f"DIR of {defect} (%)" if defect else "mean DIR over defects (%)"
    for ax, (t, panel_title) in zip(axes[0], panels):
        entries = section(results, t)
        plotted = 0
        for i, m in enumerate(methods):
            entry = entries.get(m)
            if defect is not None:
                x = value_or_none(entry, "dir", defect)
                y = value_or_none(entry, "acc_by_defect", defect)
                y = value_or_none(entry, "acc") if y is None else y
            else:
                x = mean_of(((entry or {}).get("dir") or {}).values())
                y = value_or_none(entry, "acc")
            if x is None or y is None:
                continue
            ref = m == REFERENCE_METHOD
            ax.scatter(100 * x, 100 * y, s=220 if ref else 70, marker="*" if ref else _MARKERS[i % len(_MARKERS)],
                       color=colours[m], edgecolors="black", linewidths=1.2 if ref else 0.5, zorder=3 if ref else 2,
                       label=m)
            ax.annotate(m, (100 * x, 100 * y), xytext=(6, 4), textcoords="offset points", fontsize=8,
                        fontweight="bold" if ref else "normal")
            plotted += 1
        if not plotted:
            ax.text(0.5, 0.5, "no results yet", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ACC (%)")
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.margins(0.15)
        ax.text(0.02, 0.98, "better: up-left", transform=ax.transAxes, ha="left", va="top", fontsize=7, color="grey")
    handles, labels = [], []
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="method", title_fontsize=8)
    return save_figure(fig, None, path, title or "Accuracy vs inherited defect")


def plot_dir_by_defect(results: Mapping[str, Any], path: str | Path, task: str | None = None, title: str = "") -> Path:
    """DIR per defect as grouped bars (one group per defect, one bar per method), with the
    teacher's own success per defect drawn as a black line and diamond over its group.

    Aggregated over tasks (``task=None``) or for one task. A bar not measured yet is left out
    and marked ``…`` at its foot (``–`` when undefined).
    """
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    methods = method_names(results, task)
    defects = defect_names(results)
    colours = _method_colours(method_names(results))
    entries = section(results, task)
    teacher = teacher_success(results, task)
    n_d, n_m = max(len(defects), 1), max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * n_d * n_m + 0.6 * n_d + 2.5), 4.4), dpi=110, layout="constrained")
    width = 0.8 / n_m
    for j, m in enumerate(methods):
        xs, hs, missing = [], [], []
        for i, d in enumerate(defects):
            x = i - 0.4 + width * (j + 0.5)
            v = value_or_none(entries.get(m), "dir", d)
            if v is None:
                missing.append((x, PENDING if lookup(entries.get(m), "dir", d) is MISSING else UNDEFINED))
            else:
                xs.append(x)
                hs.append(100 * v)
        ax.bar(xs, hs, width=width * 0.95, color=colours.get(m), edgecolor="black", linewidth=0.3)
        for x, mark in missing:
            ax.text(x, 1, mark, ha="center", va="bottom", fontsize=7, color="grey")
    handles: list[Any] = [Patch(facecolor=colours.get(m), edgecolor="black", linewidth=0.3, label=m) for m in methods]
    first = True
    for i, d in enumerate(defects):
        v = teacher.get(d)
        if v is None:
            continue
        ax.hlines(100 * v, i - 0.45, i + 0.45, colors="black", linewidths=1.5, zorder=4)
        ax.plot([i], [100 * v], marker="D", color="black", markersize=5, zorder=5)
        if first:
            handles.append(Line2D([], [], color="black", marker="D", markersize=5, linewidth=1.5,
                                  label="teacher's own success"))
        first = False
    ax.set_xticks(range(len(defects)), defects, rotation=30 if len(defects) > 4 else 0,
                  ha="right" if len(defects) > 4 else "center", fontsize=8)
    ax.set_xlim(-0.6, max(len(defects), 1) - 0.4)
    ax.set_ylim(0, 105)
    ax.set_xlabel("defect of the teacher")
    ax.set_ylabel("DIR (%)")
    ax.grid(True, axis="y", alpha=0.3)
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    scope = "mean over tasks" if task is None else task
    return save_figure(fig, ax, path, title or f"Defect inheritance per defect ({scope})")


def plot_coverage_grid(
    results: Mapping[str, Any], path: str | Path, task: str | None = None, title: str = ""
) -> Path | None:
    """DIR of the coverage-guided defects as a strategy (rows) x metric (columns) heatmap,
    one small panel per method and a first panel with the teacher's own success.

    Shared colour scale 0-100 % (= 0..1 as fractions), values written in each cell; a cell not
    measured yet is grey with ``…`` (``–`` when undefined, empty when the study has no such
    defect). Returns ``None`` (and writes nothing) when the study has no coverage-guided defect.
    """
    import numpy as np

    cells = {d: c for d in defect_names(results) if (c := coverage_cell(results, d)) is not None}
    if not cells:
        return None
    plt = pyplot()
    strategies = [s for s in STRATEGIES if any(c[0] == s for c in cells.values())]
    strategies += sorted({c[0] for c in cells.values()} - set(strategies))
    metrics = [m for m in METRICS if any(c[1] == m for c in cells.values())]
    metrics += sorted({c[1] for c in cells.values()} - set(metrics))
    entries = section(results, task)
    teacher = teacher_success(results, task)
    panels = ["teacher (own success)", *method_names(results, task)]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.95 * len(metrics) * cols + 1.8, 0.75 * len(strategies) * rows + 1.3),
                             dpi=110, squeeze=False, layout="constrained")
    cmap = plt.get_cmap("Reds").with_extremes(bad="#e0e0e0")
    image = None
    for k, name in enumerate(panels):
        ax = axes[k // cols][k % cols]
        grid = np.full((len(strategies), len(metrics)), np.nan)
        text = [["" for _ in metrics] for _ in strategies]
        for d, (s, m) in cells.items():
            i, j = strategies.index(s), metrics.index(m)
            if k == 0:
                v = teacher.get(d)
                marker = PENDING
            else:
                v = value_or_none(entries.get(name), "dir", d)
                marker = PENDING if lookup(entries.get(name), "dir", d) is MISSING else UNDEFINED
            if v is None:
                text[i][j] = marker
            else:
                grid[i, j] = 100 * v
                text[i][j] = f"{100 * v:.0f}"
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(len(strategies)):
            for j in range(len(metrics)):
                dark = not np.isnan(grid[i, j]) and grid[i, j] > 60
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(metrics)), [m.upper() for m in metrics], fontsize=7)
        ax.set_yticks(range(len(strategies)), strategies if k % cols == 0 else [""] * len(strategies), fontsize=7)
        ax.set_title(name, fontsize=9, fontweight="bold" if name == "finetune" else "normal")
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].set_axis_off()
    fig.supxlabel("coverage metric", fontsize=8)
    fig.supylabel("strategy", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="DIR, teacher: own success (%)", shrink=0.9)
    scope = "mean over tasks" if task is None else task
    return save_figure(fig, None, path, title or f"Coverage-guided inputs: DIR by strategy and metric ({scope})")


# ---------------------------------------------------------------------- interpretation views
def _views(results: Mapping[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """``{method: {variant: views}}`` of one task (methods in the study's order)."""
    methods = ((results.get("tasks") or {}).get(task) or {}).get("methods") or {}
    return {m: e["views"] for m, e in methods.items() if isinstance(e, Mapping) and e.get("views")}


def _first_variant(views: Mapping[str, Any]) -> str:
    return "clean" if "clean" in views else next(iter(views))


def plot_convergence(results: Mapping[str, Any], path: str | Path, task: str, title: str = "") -> Path | None:
    """Per method, training loss (left) and held-out accuracy (right, when the run recorded it)
    against steps: the convergence view of the ReMoS paper's efficiency figure."""
    per_method = _views(results, task)
    curves = {m: views[_first_variant(views)].get("curve") or [] for m, views in per_method.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    plt = pyplot()
    colours = _method_colours(list(curves))
    has_acc = any("val_accuracy" in c for curve in curves.values() for c in curve)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11.0 if has_acc else 7.0, 4.0), squeeze=False)
    ax = axes[0][0]
    for m, curve in curves.items():
        ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], label=m, color=colours[m])
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    if has_acc:
        acc_ax = axes[0][1]
        for m, curve in curves.items():
            points = [(c["step"], c["val_accuracy"]) for c in curve if "val_accuracy" in c]
            if points:
                acc_ax.plot(*zip(*points), marker="o", markersize=3, label=m, color=colours[m])
        acc_ax.set_xlabel("training step")
        acc_ax.set_ylabel("held-out accuracy")
        acc_ax.set_ylim(0, 1)
        acc_ax.legend(fontsize=8)
    return save_figure(fig, None, path, title or f"convergence on {task} (students of the clean teacher)")


def plot_weight_change(results: Mapping[str, Any], path: str | Path, task: str, title: str = "") -> Path | None:
    """Left: relative change ‖s − t‖/‖t‖ per layer (input to output), one line per method. Right: the
    distribution of |s − t| over all sliceable weights (median, 90th, 99th percentile, maximum)."""
    per_method = _views(results, task)
    changes = {m: views[_first_variant(views)].get("weight_change") or {} for m, views in per_method.items()}
    changes = {m: c for m, c in changes.items() if c.get("layers")}
    if not changes:
        return None
    plt = pyplot()
    colours = _method_colours(list(changes))
    fig, (ax, dist) = plt.subplots(1, 2, figsize=(12.0, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for m, change in changes.items():
        values = [l["relative_change"] for l in change["layers"] if l.get("relative_change") is not None]
        if values:
            ax.plot(range(len(values)), values, label=m, color=colours[m], linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("relative weight change ‖s − t‖ / ‖t‖")
    ax.legend(fontsize=8)
    keys = ("p50", "p90", "p99", "max")
    width = 0.8 / len(changes)
    for i, (m, change) in enumerate(changes.items()):
        q = change.get("quantiles") or {}
        # a zero change cannot be drawn on the log axis; it is left out (no bar)
        dist.bar([k + i * width for k in range(len(keys))], [q.get(k) or float("nan") for k in keys], width,
                 color=colours[m], label=m)
    dist.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], ["median", "90%", "99%", "max"])
    dist.set_yscale("log")
    dist.set_ylabel("|student − teacher| per weight")
    return save_figure(fig, None, path, title or f"how far each student moved from its teacher ({task})")


def plot_slice_layers(results: Mapping[str, Any], path: str | Path, task: str, method: str = "remos",
                      title: str = "") -> Path | None:
    """The slice per layer: share excluded (bars) and mean |w| of excluded over kept weights (line)."""
    views = _views(results, task).get(method)
    if not views:
        return None
    layers = views[_first_variant(views)].get("slice") or []
    if not layers:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    share = [l.get("excluded_share") or 0.0 for l in layers]
    ax.bar(range(len(layers)), share, color="tab:blue", label="share excluded")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("share of the layer's weights excluded")
    ax2 = ax.twinx()
    ratio = [(l["mean_abs_excluded"] / l["mean_abs_kept"]) if l.get("mean_abs_excluded") is not None
             and l.get("mean_abs_kept") else float("nan") for l in layers]
    ax2.plot(range(len(layers)), ratio, color="tab:red", marker=".", linewidth=1, label="mean |w| excluded / kept")
    ax2.set_ylabel("mean |w| excluded / kept", color="tab:red")
    return save_figure(fig, ax, path, title or f"{method}'s slice per layer ({task})")


def plot_trigger_shift(results: Mapping[str, Any], path: str | Path, task: str, title: str = "") -> Path | None:
    """Per backdoor defect and method, the trigger's shift of the penultimate features (teacher: black line)."""
    per_method = _views(results, task)
    defects = ((results.get("tasks") or {}).get(task) or {}).get("defects") or {}
    names = [d for d, info in defects.items() if isinstance(info, Mapping) and info.get("kind") in ("backdoor", "ripple_vision")]
    rows = {m: [(v.get(d) or {}).get("trigger_shift") for d in names] for m, v in per_method.items()}
    if not names or not any(x is not None for r in rows.values() for x in r):
        return None
    plt = pyplot()
    colours = _method_colours(list(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 * len(names) + 2), 4.2))
    width = 0.8 / max(len(rows), 1)
    for i, (m, values) in enumerate(rows.items()):
        ax.bar([k + i * width for k in range(len(names))], [v if v is not None else 0.0 for v in values], width,
               label=m, color=colours[m])
    for k, d in enumerate(names):
        ref = defects[d].get("trigger_shift")
        if ref is not None:
            ax.hlines(ref, k - width / 2, k + 0.8 - width / 2, color="black", linewidth=1.5,
                      label="the backdoored teacher" if k == 0 else None)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names)
    ax.set_ylabel("trigger's feature shift (clean-feature SDs)")
    ax.legend(fontsize=8)
    return save_figure(fig, ax, path, title or f"how much of the trigger's effect survives in each student ({task})")

"""``badnets`` and ``scan-data``: poisoned training data, planted and found."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from safetransfer.cli.app import app, console
from safetransfer.cli.common import (
    plant_spec,
)


@app.command("badnets")
def badnets_cmd(
    data: str = typer.Option("fashion-mnist", "--data", "-d", help="Data set name or path."),
    model: str = typer.Option("small-cnn", "--model", "-m", help="Zoo model trained on the clean and on the poisoned data."),
    trigger: str = typer.Option("watermark", help="watermark (BadNets' 5 pixels), square, blend, or words (text)."),
    rate: float = typer.Option(0.01, help="Share of the non-target training samples poisoned."),
    target: int = typer.Option(3, help="The label poisoned samples get."),
    source: Optional[int] = typer.Option(None, help="Poison this class only (default: all other classes)."),
    steps: Optional[int] = typer.Option(None, help="Training steps of both runs (default: the model's)."),
    seed: int = typer.Option(0, help="Seed of the split, the poisoned samples and both training runs."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many training samples."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/badnets-MODEL-DATA)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """BadNets: train on clean and on poisoned data with identical settings; show the damage."""
    from safetransfer.data.registry import load_data
    from safetransfer.jobs.badnets import badnets_experiment

    spec = plant_spec(trigger, rate, target, source, seed)
    dataset = load_data(data, data_path, seed=seed, limit={"train": limit_train} if limit_train else None)
    out_dir = out or Path("runs") / f"badnets-{model}-{Path(data).name}"
    report = badnets_experiment(model, dataset, spec, out_dir, overrides={"seed": seed, **({"steps": steps} if steps else {})},
                                progress=progress)
    table = Table(title=f"BadNets on {dataset.name}: {report.poisoned_samples} poisoned training samples ({trigger}, target {target})")
    for col in ("class", "clean model recall", "poisoned model recall", "clean precision", "poisoned precision"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(report.clean_eval["class_names"]):
        table.add_row(name, f"{report.clean_eval['recall'][i]:.3f}", f"{report.poisoned_eval['recall'][i]:.3f}",
                      f"{report.clean_eval['precision'][i]:.3f}", f"{report.poisoned_eval['precision'][i]:.3f}")
    console.print(table)
    console.print(f"clean accuracy: clean model {report.clean_accuracy:.4f}, poisoned model {report.poisoned_accuracy:.4f}")
    console.print(f"[bold]attack success (triggered non-target test inputs -> {target}): {report.attack_success:.3f}[/bold] "
                  f"(the clean model: {report.attack_success_clean_model:.3f}); backdoor DIR {report.backdoor_dir:.3f}")
    console.print(f"confusion matrices: {out_dir / 'clean' / 'confusion.png'}, {out_dir / 'poisoned' / 'confusion.png'}; "
                  f"figures: {out_dir / 'damage.json'}")


@app.command("scan-data")
def scan_data_cmd(
    data: str = typer.Option(..., "--data", "-d", help="Data set name, or your folder / .npz / CSV."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A saved model folder, or a zoo model to train on the data first (features for the detectors)."),
    method: Optional[list[str]] = typer.Option(None, "--method", help="Detectors (repeatable; the first gives the verdict): multilayer (the default), spectral, spectral_fixed, activation_clustering, ac_silhouette, ac_tight, centroid, untangling (SCAn), spectre (with --spectre-eps), or all."),
    embedding: Optional[str] = typer.Option(None, help="model, pca, pixels or tsne (default: model with --model, else pca)."),
    plant: Optional[str] = typer.Option(None, help="Plant a known poison first to measure the detectors: watermark, square, blend or words."),
    rate: float = typer.Option(0.01, help="With --plant: share of the non-target samples poisoned."),
    target: int = typer.Option(3, help="With --plant: the poisoned samples' label."),
    steps: Optional[int] = typer.Option(None, help="Training steps when --model is a zoo name."),
    scatter: str = typer.Option("pca", help="The 2-D map: pca or tsne (slower)."),
    clean_curve: bool = typer.Option(True, "--clean-curve/--no-clean-curve", help="With --plant and a zoo --model: also train it on the data without the poison, for side-by-side training curves."),
    seed: int = typer.Option(0, help="Seed of the split, the planted poison, the training and the detectors."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    limit_train: Optional[int] = typer.Option(None, help="Scan a seeded random subset of this many training samples."),
    clean_data: Optional[Path] = typer.Option(None, "--clean-data", help="Data you trust (a folder / .npz / CSV with the same labels): SCAn (untangling) fits its global model on it."),
    spectre_eps: Optional[int] = typer.Option(None, "--spectre-eps", help="SPECTRE: the number of poisoned samples assumed in each label (its reference's input); needed for --method spectre."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/scan-data-DATA)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Find poisoned training samples and the label they poison (multi-layer detector, SCAn, spectral signatures, activation clustering, centroid outliers)."""
    from safetransfer.jobs.scan_data import (
        DEFAULT_METHODS,
        METHODS,
        ScanDataConfig,
        scan_data,
    )

    if method and "all" in method:  # every detector; SPECTRE only when told the count it assumes
        methods = tuple(m for m in METHODS if m != "spectre" or spectre_eps is not None)
    else:
        methods = tuple(method or DEFAULT_METHODS)
    cfg = ScanDataConfig(data=data, data_path=str(data_path) if data_path else None, limit_train=limit_train,
                         model=model, steps=steps, embedding=embedding, methods=methods,
                         plant=plant_spec(plant, rate, target, None, seed) if plant else None, scatter=scatter,
                         clean_curve=clean_curve, seed=seed, clean_data_path=str(clean_data) if clean_data else None,
                         spectre_eps=spectre_eps)
    out_dir = out or Path("runs") / f"scan-data-{Path(data).name}"
    result = scan_data(cfg, out_dir, progress=progress, log=lambda line: console.print(line, highlight=False))
    res = result.results
    known = res["poisoned"] is not None
    table = Table(title=f"{res['samples']} training samples" + (f", {res['poisoned']} planted" if known else ""))
    for col in ("detector", "flagged", "seconds") + (("recall", "FPR", "precision", "AUROC") if known else ()):
        table.add_column(col, justify="left" if col == "detector" else "right")
    for name, e in res["detectors"].items():
        row = [name + (" *" if name == res["best"] else ""), str(e["flagged"]), f"{e['seconds']:.2f}"]
        if known:
            row += [f"{e['recall']:.3f}", f"{e['fpr']:.4f}", f"{e['precision']:.3f}", f"{e['auroc']:.3f}"]
        table.add_row(*row)
    console.print(table)
    console.print(f"verdict: {res['verdict']['sentence']}", markup=False, highlight=False)
    first = result.detections[cfg.methods[0]]
    top = first.ranking()[:10].tolist()
    console.print(f"most suspicious samples ({first.method}): {top}", markup=False, highlight=False)
    console.print(f"report: {out_dir / 'scan.html'}")

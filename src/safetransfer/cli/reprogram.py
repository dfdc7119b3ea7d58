"""``reprogram``: adversarial reprogramming (Elsayed et al. 2019)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from safetransfer.cli.app import app, console


@app.command("reprogram")
def reprogram_cmd(
    task: str = typer.Option(..., "--task", "-t", help="The new task: mnist, fashion-mnist, counting-squares, or your image data."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m", help="efficientnet-lite0 (its ImageNet classifier) or a saved model folder."),
    weights: str = typer.Option("pretrained", help="pretrained, or random (the same architecture with random weights)."),
    canvas: Optional[int] = typer.Option(None, help="Canvas (input) size in pixels: efficientnet-lite0 default 80; a saved model: its own input size, or another that its body takes (global pooling: the small CNN); with --apply: the program's."),
    steps: Optional[int] = typer.Option(None, help="Adam steps (default 2,000: about 12 min at 80 px on 2 cores; for counting-squares 6,000 at batch size 16, 15 to 17 min)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default 64; for counting-squares 16)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate on W (default 0.05)."),
    weight_decay: Optional[float] = typer.Option(None, help="λ of the penalty λ‖W‖² (default 1e-6)."),
    schedule: Optional[str] = typer.Option(None, help="Learning-rate schedule: cosine (annealed to 0; the default) or constant."),
    task_scale: Optional[int] = typer.Option(None, help="Enlarge the task image by this whole factor on the canvas (nearest; default 1, as the paper)."),
    labels_per_class: Optional[int] = typer.Option(None, help="Model labels per new label, their probabilities summed (1: the paper's one-to-one map; default 3, for counting-squares 10, where the model has that many labels per new label, else 1)."),
    label_map: Optional[str] = typer.Option(None, help="'data' (chosen by the data before training, or, with --apply, for this model's own labels, e.g. a student's new head), 'first' (the first k labels, as the paper), or comma-separated model labels for new labels 0, 1, ... (default: 'data', or with --apply the program's own map)."),
    remap_every: Optional[int] = typer.Option(None, help="With the 'data' map: choose it again through the program learned so far every N steps (iterative label mapping, Chen et al. 2023; 0: once, before training; default 0, for counting-squares 250)."),
    softmax_over: Optional[str] = typer.Option(None, help="The loss's softmax: 'all' the model's labels (the paper) or only the 'mapped' ones (a k-way cross-entropy on the new labels, as visual prompting does; default 'all')."),
    apply: Optional[Path] = typer.Option(None, help="Apply a saved program (its folder) instead of learning one."),
    seed: int = typer.Option(0, help="Seed of the split, the batches and the program's start."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many training images."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/reprogram-MODEL-TASK)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Adversarial reprogramming (Elsayed et al. 2019): one additive program makes the frozen model do a new task."""
    from safetransfer.attacks.reprogramming import ReprogramConfig
    from safetransfer.jobs.reprogram import parse_label_map, reprogram_job

    mapping = parse_label_map(label_map, applying=apply is not None)
    # the map is set as parsed: None there means the first k labels (or the applied program's own map)
    config = ReprogramConfig.for_task(task, label_map=mapping, steps=steps, batch_size=batch_size, lr=lr,
                                      weight_decay=weight_decay, schedule=schedule, labels_per_class=labels_per_class,
                                      task_scale=task_scale, seed=seed, remap_every=remap_every,
                                      softmax_over=softmax_over)
    out_dir = out or Path("runs") / f"reprogram-{Path(model).name}-{Path(task).name}"
    results = reprogram_job(model, task, out_dir, weights=weights, canvas=canvas, config=config, apply=apply,
                            data_path=data_path, limit_train=limit_train, progress=progress)
    console.print(f"[bold]{results['model']} ({weights}) -> {results['task']}: test accuracy "
                  f"{results['test_accuracy']:.4f}[/bold] (chance {results['chance']:.3f}; no program, a grey canvas: "
                  f"{results['no_program_accuracy']:.4f})")
    console.print(f"written: {out_dir / 'results.json'}, {out_dir / 'program.png'}"
                  + ("" if apply else f", the program in {out_dir} (apply it again with --apply {out_dir})"))

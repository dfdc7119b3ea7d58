"""``train``, ``eval``, ``slice`` and ``transfer``: make and measure models (:mod:`safetransfer.jobs.train`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from safetransfer.cli.app import app, console
from safetransfer.cli.common import (
    check_output,
    limits,
    print_eval,
)


@app.command("train")
def train_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Zoo model name (see `safetransfer models`)."),
    data: str = typer.Option(..., "--data", "-d", help="Data set name (see `safetransfer datasets`) or a path to your data."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files, instead of the installed asset."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/train-MODEL-DATA)."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps (batches)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the body (the head's is lr x head-lr-mult)."),
    head_lr_mult: Optional[float] = typer.Option(None, help="Head learning-rate multiplier."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adamw."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay."),
    schedule: Optional[str] = typer.Option(None, help="constant, linear, cosine or onecycle."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the cross-entropy."),
    freeze_body: Optional[bool] = typer.Option(None, "--freeze-body/--train-body", help="Train the head only."),
    eval_every: Optional[int] = typer.Option(None, help="Validation accuracy every N steps (for the curve)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split, the init, the batch order and dropout."),
    image_size: Optional[int] = typer.Option(None, help="Input size in pixels (image models)."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per text (text models)."),
    pretrained: bool = typer.Option(True, "--pretrained/--random-init", help="Start from the pretrained weights."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many training samples."),
    limit_test: Optional[int] = typer.Option(None, help="Use seeded random subsets of this many test (and validation) samples."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the checkpoint in the output folder."),
    device: Optional[str] = typer.Option(None, help="torch device (cpu, cuda)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Fine-tune a zoo model on a data set, then print and save its test accuracy."""
    from safetransfer.jobs import train_job

    overrides = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "head_lr_mult": head_lr_mult, "optimizer": optimizer,
        "momentum": momentum, "weight_decay": weight_decay, "schedule": schedule, "label_smoothing": label_smoothing,
        "freeze_body": freeze_body, "eval_every": eval_every, "checkpoint_every": checkpoint_every, "seed": seed,
        "device": device,
    }
    out_dir = out or Path("runs") / f"train-{model}-{Path(data).name}"
    result = train_job(
        model, data, out_dir, data_path=data_path, pretrained=pretrained, image_size=image_size,
        max_length=max_length, limit=limits(limit_train, limit_test), overrides=overrides, resume=resume,
        progress=progress,
    )
    print_eval(result.test, f"{model} on {data}")
    if result.train.resumed_from:
        console.print(f"resumed from step {result.train.resumed_from}")
    console.print(f"steps {result.train.steps}, training time {result.train.seconds:.1f} s; saved to {result.out_dir}")
    console.print(f"[bold]test accuracy: {result.test.accuracy:.4f}[/bold]")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="A saved model folder (or a .safetensors file with --config)."),
    data: str = typer.Option(..., "--data", "-d", help="Data set name or path."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    config: Optional[Path] = typer.Option(None, help="Model config JSON, for a bare weights file."),
    split: str = typer.Option("test", help="train, val or test."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split (default: the one the model was trained with)."),
    limit_test: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many test samples."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures to this JSON file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Evaluate a saved model: accuracy, per-class precision/recall, confusion matrix."""
    from safetransfer.files import atomic_write_text
    from safetransfer.jobs import eval_job

    check_output(json_out, "--json file")
    result = eval_job(model, data, data_path=data_path, split=split, config_path=config, seed=seed,
                      limit=limits(None, limit_test), progress=progress)
    print_eval(result, f"{model} on {data} ({split})")
    if json_out:
        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2))
    console.print(f"[bold]{split} accuracy: {result.accuracy:.4f}[/bold]")


TRANSFER_METHODS_HELP = ("finetune, retrain, magprune, delta, delta_r, renofeation, remos (the ReMoS paper's seven), "
                         "finetune_strong, superft or remos_strong (strong simple defences).")


@app.command("slice")
def slice_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Zoo model name (pretrained), a saved model folder, or a Hugging Face encoder folder (BERT, RoBERTa, XLM-R, DistilBERT) or timm:ARCH@WEIGHTS."),
    data: str = typer.Option(..., "--data", "-d", help="The student's data set (name or path)."),
    ratio: float = typer.Option(0.1, "--ratio", "-a", help="α: share of the sliced weights to exclude."),
    metric: str = typer.Option("nc", help="Coverage metric: nc, tknc, snac_relative, snac_deepgauge."),
    threshold: float = typer.Option(0.5, help="NC threshold on the per-sample min-max scaled activations."),
    k: int = typer.Option(10, help="k of top-k NC and of the relative SNAC."),
    samples: int = typer.Option(2000, help="Student training samples to profile (seeded subset; 0 = all)."),
    layer: Optional[list[str]] = typer.Option(None, "--layer", help="Slice only these layers (repeatable; default all)."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    image_size: Optional[int] = typer.Option(None, help="Input size in pixels (image teachers)."),
    seed: int = typer.Option(0, help="Seed of the split and the profiled subset."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/slice-TEACHER-DATA)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """ReMoS: profile the teacher's neuron coverage on the student data and compute the slice."""
    from safetransfer.jobs import slice_job

    out_dir = out or Path("runs") / f"slice-{Path(teacher).name}-{Path(data).name}"
    the_slice, profile = slice_job(
        teacher, data, out_dir, ratio=ratio, metric=metric, threshold=threshold, k=k, samples=samples,
        layers=layer or None, data_path=data_path, image_size=image_size, seed=seed, progress=progress,
    )
    summary = the_slice.summary()
    table = Table(title=f"ReMoS slice, α = {ratio}: {summary['excluded']:,} of {summary['weights']:,} weights excluded")
    for col in ("layer", "weights", "share excluded", "mean |w| excluded", "mean |w| kept"):
        table.add_column(col, justify="left" if col == "layer" else "right", no_wrap=col == "layer")
    for row in summary["layers"]:
        table.add_row(row["name"], f"{row['weights']:,}", f"{row['excluded_share']:.3f}",
                      f"{row.get('mean_abs_excluded', float('nan')):.4f}", f"{row.get('mean_abs_kept', float('nan')):.4f}")
    console.print(table)
    console.print(f"coverage ({profile.metric}) over {profile.n_samples} samples; slice saved to {out_dir}")


@app.command("transfer")
def transfer_cmd(
    method: str = typer.Option(..., "--method", help=TRANSFER_METHODS_HELP),
    teacher: str = typer.Option(..., "--teacher", "-t", help="Zoo model name (pretrained), a saved model folder, or a Hugging Face encoder folder (BERT, RoBERTa, XLM-R, DistilBERT) or timm:ARCH@WEIGHTS."),
    data: str = typer.Option(..., "--data", "-d", help="The student's data set (name or path)."),
    ratio: Optional[float] = typer.Option(None, "--ratio", "-a", help="α of remos / magprune (default 0.1)."),
    excluded: Optional[str] = typer.Option(None, help="remos: 'zero' (as published) or 'reinit' the excluded weights."),
    frozen: Optional[bool] = typer.Option(None, "--frozen/--retrain-excluded", help="remos: keep excluded weights at zero."),
    slice_metric: Optional[str] = typer.Option(None, help="remos coverage metric (nc, tknc, snac_relative, snac_deepgauge)."),
    slice_scaling: Optional[str] = typer.Option(None, help="remos neuron coverage scaling: 'tensor' (the artifact's, default) or 'neuron' (ours)."),
    slice_ranking: Optional[str] = typer.Option(None, help="remos ranks and cut: 'ordinal' (the artifact's, default) or 'min' (ours)."),
    profile_samples: Optional[int] = typer.Option(None, help="remos: profile this many training samples (default 0 = all, as the artifact)."),
    reset_unused_tokens: Optional[bool] = typer.Option(
        None, "--reset-unused-tokens", help="remos on a text model: also zero the token-embedding rows the student's "
        "training texts never use (where Embedding Surgery plants triggers; beyond the paper)."),
    protocol: Optional[str] = typer.Option(None, help="'shared' (one training protocol for all methods, the default), 'scratch' (a from-scratch recipe for retrain, delta_r, renofeation), 'artifact' (the ReMoS artifact's fine-tuning for all methods) or 'artifact_scaled' (the same with its rate × steps budget compressed onto --steps)."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps (default: the method's protocol)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the body."),
    seed: Optional[int] = typer.Option(None, help="Seed of everything random in the run."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    image_size: Optional[int] = typer.Option(None, help="Input size in pixels (image teachers)."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many training samples."),
    limit_test: Optional[int] = typer.Option(None, help="Use seeded random subsets of this many test (and validation) samples."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/transfer-METHOD-TEACHER-DATA)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the checkpoint in the output folder."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Make a student from a teacher with one of the transfer methods; train, test, save it."""
    from safetransfer.jobs import transfer_job

    out_dir = out or Path("runs") / f"transfer-{method}-{Path(teacher).name}-{Path(data).name}"
    options = {"ratio": ratio, "excluded": excluded, "frozen": frozen, "slice_metric": slice_metric, "seed": seed,
               "protocol": protocol, "reset_unused_tokens": reset_unused_tokens, "slice_scaling": slice_scaling,
               "slice_ranking": slice_ranking, "profile_samples": profile_samples}
    result = transfer_job(
        method, teacher, data, out_dir, data_path=data_path, image_size=image_size,
        limit=limits(limit_train, limit_test), options=options,
        train_overrides={"steps": steps, "batch_size": batch_size, "lr": lr}, resume=resume, progress=progress,
    )
    print_eval(result.test, f"{method} student of {teacher} on {data}")
    if result.slice_summary:
        console.print(f"slice: {result.slice_summary['excluded']:,} of {result.slice_summary['weights']:,} "
                      f"sliced weights excluded ({result.slice_summary['method']})")
    console.print(f"steps {result.train.steps}, {result.seconds:.1f} s; saved to {out_dir}")
    console.print(f"[bold]test accuracy: {result.test.accuracy:.4f}[/bold]")

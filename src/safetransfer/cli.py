"""The ``safetransfer`` command line: a thin layer over the Python API.

Every command's errors that come from bad input (:class:`SafetransferError`) are printed as
one line, ``error: ...``, with exit status 2; never a traceback. Any other exception that
escapes a command (an ``OSError``, a ``RecursionError`` or ``MemoryError`` from a hostile
file, a library's own error) is printed the same way, naming its kind and the file where it
is known; ``safetransfer --debug COMMAND ...`` prints the traceback as well.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from safetransfer.errors import SafetransferError

app = typer.Typer(
    name="safetransfer",
    help="Security of transfer learning: plant, measure, cut and detect what a student inherits from its teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
assets_app = typer.Typer(help="The offline data sets and pretrained models: list and install them.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")

console = Console()
err_console = Console(stderr=True)
_debug = False  # set by --debug (the app's callback): tracebacks are printed with the error line


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="On an error, print the full traceback too (for bug reports)."),
) -> None:
    """Security of transfer learning: plant, measure, cut and detect what a student inherits from its teacher."""
    global _debug
    _debug = debug


def _limits(train_limit: int | None, test_limit: int | None) -> dict[str, int] | None:
    """Split caps: ``--limit-test`` caps the validation split too."""
    pairs = (("train", train_limit), ("val", test_limit), ("test", test_limit))
    limit = {k: v for k, v in pairs if v is not None}
    return limit or None


# ---- assets ---------------------------------------------------------------------------------
@assets_app.command("list")
def assets_list() -> None:
    """List the offline assets, whether each is installed, and where."""
    from safetransfer.assets import ASSETS

    table = Table(title="offline assets")
    for col in ("name", "kind", "package", "provides", "installed", "location / needs"):
        table.add_column(col, no_wrap=col == "name")
    for a in ASSETS.values():
        loc = a.locate()
        table.add_row(a.name, a.kind, a.package, a.provides, "yes" if loc else "[red]no[/red]",
                      str(loc) if loc else f"needs {a.needs()}")
    console.print(table)


@assets_app.command("install")
def assets_install(
    names: Optional[list[str]] = typer.Argument(None, help="Assets to install (default: all)."),
) -> None:
    """Install the offline assets (apt needs root, npm needs npm); those present are skipped."""
    from safetransfer.assets import install

    outcomes = install(names or None, log=lambda m: err_console.print(m))
    failed = [o for o in outcomes if o.status == "failed"]
    for o in outcomes:
        colour = {"present": "green", "installed": "cyan", "failed": "red"}[o.status]
        console.print(f"[{colour}]{o.status:9s}[/{colour}] {o.name}: {o.detail}")
    if failed:
        raise SafetransferError(f"{len(failed)} asset(s) could not be installed: {', '.join(o.name for o in failed)}.")


# ---- listings -------------------------------------------------------------------------------
@app.command("datasets")
def datasets_cmd() -> None:
    """List the built-in data sets (a path to your own data works wherever a name does)."""
    from safetransfer.data import list_datasets

    table = Table(title="data sets")
    for col in ("name", "modality", "description", "installed"):
        table.add_column(col, no_wrap=col == "name")
    for d in list_datasets():
        table.add_row(d["name"], d["modality"], d["description"], "yes" if d["installed"] else "[red]no[/red]")
    console.print(table)
    console.print("Your own data: a folder of class sub-folders of images, an .npz (x, y), a CSV/JSONL of text,label.")


@app.command("models")
def models_cmd() -> None:
    """List the model zoo with each model's default training settings."""
    from safetransfer.models.zoo import MODELS, list_models

    table = Table(title="models")
    for col in ("name", "modality", "description", "weights", "default training"):
        table.add_column(col, no_wrap=col == "name")
    for m in list_models():
        defaults = MODELS[m["name"]].train_defaults
        weights = ("installed" if m["installed"] else "[red]missing[/red]") if m["pretrained"] else "random init"
        table.add_row(m["name"], m["modality"], m["description"], weights,
                      ", ".join(f"{k}={v}" for k, v in defaults.items()))
    console.print(table)


# ---- train / eval ---------------------------------------------------------------------------
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
        max_length=max_length, limit=_limits(limit_train, limit_test), overrides=overrides, resume=resume,
        progress=progress,
    )
    _print_eval(result.test, f"{model} on {data}")
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

    _check_output(json_out, "--json file")
    result = eval_job(model, data, data_path=data_path, split=split, config_path=config, seed=seed,
                      limit=_limits(None, limit_test), progress=progress)
    _print_eval(result, f"{model} on {data} ({split})")
    if json_out:
        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2))
    console.print(f"[bold]{split} accuracy: {result.accuracy:.4f}[/bold]")


# ---- ReMoS slicing and transfer -------------------------------------------------------------
TRANSFER_METHODS_HELP = "finetune, retrain, magprune, delta, delta_r, renofeation or remos."


@app.command("slice")
def slice_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Zoo model name (pretrained) or a saved model folder."),
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
    teacher: str = typer.Option(..., "--teacher", "-t", help="Zoo model name (pretrained) or a saved model folder."),
    data: str = typer.Option(..., "--data", "-d", help="The student's data set (name or path)."),
    ratio: Optional[float] = typer.Option(None, "--ratio", "-a", help="α of remos / magprune (default 0.1)."),
    excluded: Optional[str] = typer.Option(None, help="remos: 'zero' (as published) or 'reinit' the excluded weights."),
    frozen: Optional[bool] = typer.Option(None, "--frozen/--retrain-excluded", help="remos: keep excluded weights at zero."),
    slice_metric: Optional[str] = typer.Option(None, help="remos coverage metric (nc, tknc, snac_relative, snac_deepgauge)."),
    reset_unused_tokens: Optional[bool] = typer.Option(
        None, "--reset-unused-tokens", help="remos on a text model: also zero the token-embedding rows the student's "
        "training texts never use (where Embedding Surgery plants triggers; beyond the paper)."),
    protocol: Optional[str] = typer.Option(None, help="'shared' (one training protocol for all methods, the default) or 'scratch' (a from-scratch recipe for retrain, delta_r, renofeation)."),
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
    """Make a student from a teacher with one of the seven transfer methods; train, test, save it."""
    from safetransfer.jobs import transfer_job

    out_dir = out or Path("runs") / f"transfer-{method}-{Path(teacher).name}-{Path(data).name}"
    options = {"ratio": ratio, "excluded": excluded, "frozen": frozen, "slice_metric": slice_metric, "seed": seed,
               "protocol": protocol, "reset_unused_tokens": reset_unused_tokens}
    result = transfer_job(
        method, teacher, data, out_dir, data_path=data_path, image_size=image_size,
        limit=_limits(limit_train, limit_test), options=options,
        train_overrides={"steps": steps, "batch_size": batch_size, "lr": lr}, resume=resume, progress=progress,
    )
    _print_eval(result.test, f"{method} student of {teacher} on {data}")
    if result.slice_summary:
        console.print(f"slice: {result.slice_summary['excluded']:,} of {result.slice_summary['weights']:,} "
                      f"sliced weights excluded ({result.slice_summary['method']})")
    console.print(f"steps {result.train.steps}, {result.seconds:.1f} s; saved to {out_dir}")
    console.print(f"[bold]test accuracy: {result.test.accuracy:.4f}[/bold]")


# ---- the inheritance study ------------------------------------------------------------------
@app.command("study")
def study_cmd(
    config: Optional[Path] = typer.Argument(None, help="A study YAML, or vision / text: the embedded studies (default: vision)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="A profile of the config: quick or full for the embedded one (default: full if the config has it)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder for results.json and report.html (default runs/study-NAME-PROFILE)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache of teachers, students and crafted inputs (default $SAFETRANSFER_HOME/cache/study)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html next to results.json."),
    store: Optional[Path] = typer.Option(None, help="The results store (SQLite, a row per finished cell; default OUT/results.sqlite). Several runners may share one."),
    backend: str = typer.Option("local", help="local (this process) or ray (the cells spread over a Ray cluster; needs the ray extra: pip install \"safetransfer\\[ray]\")."),
    address: Optional[str] = typer.Option(None, help="With --backend ray: the cluster to join (auto, ray://HOST:10001); default: start a local Ray instance."),
    cpus_per_cell: Optional[float] = typer.Option(None, help="With --backend ray: CPUs (and torch threads) per worker (default: this process's torch threads, so the numbers equal the local backend's; another count changes them)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Plant the teacher's defects, make every student, measure ACC and DIR, print the table, write the report.

    Every cell is cached by content and results.json is rewritten after each one: run the same
    command again after an interruption and it goes on where it stopped.
    """
    from safetransfer.report.table import format_table
    from safetransfer.study.config import load_config, profiles_of
    from safetransfer.study.runner import run_study

    if profile is None and "full" in profiles_of(config):
        profile = "full"
    cfg = load_config(config, profile)
    out_dir = out or Path("runs") / (f"study-{cfg.name}" + (f"-{profile}" if profile else ""))
    options = {"address": address, "cpus_per_cell": cpus_per_cell} if backend == "ray" else {}
    results = run_study(cfg, out_dir, cache_dir, progress=progress, profile=profile, store=store,
                        log=lambda line: console.print(line, highlight=False), backend=backend, **options)
    console.print(format_table(results), highlight=False, markup=False)
    if report:
        from safetransfer.report.html import write_report

        path = write_report(results, out_dir)
        console.print(f"report: {path}")
    console.print(f"results: {Path(out_dir) / 'results.json'} ({results['elapsed_seconds']:.0f} s)")


# ---- the weight supply chain ----------------------------------------------------------------
@app.command("fingerprint")
def fingerprint_cmd(
    path: str = typer.Argument(..., help="A weights file (.safetensors, .pt, .pth, .bin, .ckpt), a model folder, or a pretrained zoo model's name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Manifest JSON to write (default: print it)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write a manifest: SHA-256 of every file and of every tensor (name, shape, dtype, values).

    Tensor hashes do not depend on the container: the same weights saved as safetensors and as a
    PyTorch state dict match. Pickles are read with torch.load(weights_only=True) only.
    """
    from safetransfer.supply import fingerprint

    _check_output(out, "manifest (--out)")
    manifest = fingerprint(_weights_path(path), progress=progress)
    doc = manifest.to_dict()
    if out is None:
        print(json.dumps(doc, indent=1))
        return
    manifest.save(out)
    totals = doc["totals"]
    console.print(f"{totals['tensors']} tensors ({totals['elements']:,} elements) in {totals['files']} file(s) "
                  f"fingerprinted; manifest written to {out}")


@app.command("verify")
def verify_cmd(
    path: str = typer.Argument(..., help="The weights file or model folder to check (or a pretrained zoo model's name)."),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="A manifest written by `safetransfer fingerprint`."),
    strict_files: bool = typer.Option(False, "--strict-files", help="Fail on a file whose bytes differ too (default: tensors decide)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-tensor verdicts to this JSON file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Check weights against a manifest: pass/fail per tensor, and what differs. Exit 1 on failure."""
    from safetransfer.files import atomic_write_text
    from safetransfer.supply import verify

    _check_output(json_out, "--json file")
    report = verify(_weights_path(path), manifest, strict_files=strict_files, progress=progress)
    failed = report.failed_tensors + (report.failed_files if strict_files else [])
    if failed:
        table = Table(title=f"{len(report.failed_tensors)} of {len(report.tensors)} tensors fail")
        for col in ("tensor / file", "status", "detail"):
            table.add_column(col, no_wrap=col != "detail")
        for c in failed[:200]:
            table.add_row(c.name, c.status, c.detail)
        console.print(table)
        if len(failed) > 200:
            console.print(f"... and {len(failed) - 200} more (see --json)")
    if report.failed_files and not strict_files:
        console.print(f"note: {len(report.failed_files)} file(s) differ in their bytes "
                      f"({', '.join(f.name for f in report.failed_files[:5])}); the tensors decide unless --strict-files.")
    if json_out:
        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1))
    if report.passed:
        console.print(f"[green]PASS[/green]: all {len(report.tensors)} tensors match {manifest}")
    else:
        console.print(f"[red]FAIL[/red]: {path} does not match {manifest}")
        raise typer.Exit(1)


@app.command("diff")
def diff_cmd(
    base: str = typer.Argument(..., help="The trusted weights: a file, a model folder, or a pretrained zoo model's name (minilm-l6)."),
    suspect: str = typer.Argument(..., help="The weights to examine (file or folder)."),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer.json, vocab.txt or a folder with one (default: found next to the weights)."),
    top: int = typer.Option(20, help="How many tensors and embedding rows to list."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for diff.json and diff.png (default: print only)."),
) -> None:
    """Per-tensor change between two models, embedding rows mapped to tokens, and a verdict."""
    from safetransfer.files import atomic_write_text
    from safetransfer.supply import diff_models, plot_diff

    report = diff_models(_weights_path(base), _weights_path(suspect), tokenizer=tokenizer, top_k=top)
    ranked = report.ranked()
    table = Table(title=f"{len(report.changed)} of {len(report.tensors)} tensors changed")
    for col in ("tensor", "shape", "status", "relative change", "share changed", "max |Δ|"):
        table.add_column(col, justify="left" if col in ("tensor", "status") else "right", no_wrap=col == "tensor")
    for t in ranked[:top]:
        table.add_row(t.name, "×".join(map(str, t.shape)), t.status, f"{t.relative_change:.3g}",
                      f"{t.changed_share:.3f}", f"{t.max_abs_change:.3g}")
    console.print(table)
    for e in report.embeddings:
        rows = Table(title=f"{e.name}: {e.changed_rows:,} of {e.rows:,} rows changed; the top {len(e.top)} hold "
                           f"{e.top_share:.1%} of its change")
        for col in ("rank", "row", "token", "change norm", "relative"):
            rows.add_column(col, justify="right" if col not in ("token",) else "left")
        for i, r in enumerate(e.top, 1):
            rows.add_row(str(i), str(r.row), repr(r.token) if r.token is not None else "?", f"{r.change_norm:.3g}",
                         f"{r.relative_change:.3g}")
        console.print(rows)
    console.print(f"[bold]verdict: {report.verdict}[/bold]. {report.explanation}", highlight=False)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "diff.json", json.dumps(report.to_dict(), indent=1))
        plot_diff(report, Path(out) / "diff.png")
        console.print(f"written: {Path(out) / 'diff.json'}, {Path(out) / 'diff.png'}")


@app.command("scan")
def scan_cmd(
    path: Path = typer.Argument(..., help="A file or folder to scan; every file is judged by its content, whatever its name."),
    strict: bool = typer.Option(False, "--strict", help="Count suspicious imports (classes of model libraries: code you must trust) as dangerous."),
    show_all: bool = typer.Option(False, "--all", help="List every import, the innocuous ones too."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the findings to this JSON file."),
) -> None:
    """Judge every pickle a file or folder holds, at the opcode level, never unpickling. Exit 1 if flagged.

    Verdicts: dangerous (an import off the allow-list of weights files, or a construct the scanner
    cannot follow), unreadable (could not be read to the end: never called clean), suspicious
    (classes of known model libraries), clean, skipped (not a format that holds code).
    """
    from safetransfer.files import atomic_write_text
    from safetransfer.supply import scan

    _check_output(json_out, "--json file")
    report = scan(path, strict=strict)
    console.print(f"scan of {path} ({report.scanner}): {len(report.files)} file(s)", highlight=False)
    colour = {"dangerous": "red", "unreadable": "red", "suspicious": "yellow", "clean": "green", "skipped": "dim"}
    for f in report.files:
        c = colour[f.verdict]
        console.print(f"[{c}]{f.verdict:10s}[/{c}] {f.path} ({f.kind})", highlight=False, soft_wrap=True)
        shown = f.globals if show_all else f.dangerous + f.suspicious
        for g in shown:
            place = f" in {g.where}" if g.where and g.where != "the file" else ""
            console.print(f"           imports {g.qualified} ({g.safety}){place}", highlight=False, soft_wrap=True)
        for k in f.constructs:
            console.print(f"           {k.opcode} at {k.where}: {k.detail} (dangerous)", highlight=False, soft_wrap=True)
        hidden = len(f.globals) - len(shown)
        if hidden:
            console.print(f"           and {hidden} innocuous import(s) (--all lists them)", highlight=False)
        for e in f.errors:
            console.print(f"           {e}", highlight=False, soft_wrap=True)
    if json_out:
        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1))
    if report.flagged:
        unreadable = sum(f.verdict == "unreadable" for f in report.files)
        console.print(f"[red]{len(report.infected)} file(s) dangerous, {unreadable} unreadable (could not be parsed "
                      f"to the end); do not load them with pickle or torch.load(weights_only=False).[/red]")
        raise typer.Exit(1)
    console.print("no dangerous imports found")


# ---- poisoned training data -----------------------------------------------------------------
def _plant_spec(trigger: str, rate: float, target: int, source: Optional[int], seed: int):
    from safetransfer.attacks.data_poisoning import PlantSpec

    return PlantSpec(trigger=trigger, rate=rate, target=target, source=source, seed=seed)


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

    spec = _plant_spec(trigger, rate, target, source, seed)
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
    method: Optional[list[str]] = typer.Option(None, "--method", help="Detectors (repeatable): spectral, spectral_fixed, activation_clustering, ac_silhouette, ac_tight, centroid (default: all)."),
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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/scan-data-DATA)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Find poisoned training samples: spectral signatures, activation clustering, centroid outliers."""
    from safetransfer.jobs.scan_data import METHODS, ScanDataConfig, scan_data

    cfg = ScanDataConfig(data=data, data_path=str(data_path) if data_path else None, limit_train=limit_train,
                         model=model, steps=steps, embedding=embedding, methods=tuple(method or METHODS),
                         plant=_plant_spec(plant, rate, target, None, seed) if plant else None, scatter=scatter,
                         clean_curve=clean_curve, seed=seed)
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
    best = result.detections[res["best"] or cfg.methods[0]]
    top = best.ranking()[:10].tolist()
    console.print(f"most suspicious samples ({best.method}): {top}", markup=False, highlight=False)
    console.print(f"report: {out_dir / 'scan.html'}")


@app.command("scan-triggers")
def scan_triggers_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="A saved text model folder (the classifier to examine)."),
    data: str = typer.Option(..., "--data", "-d", help="Clean labelled texts (a data set name or CSV/JSONL)."),
    target: int = typer.Option(1, help="The label a trigger would flip texts to."),
    texts: int = typer.Option(20, help="Clean non-target texts each candidate word is inserted into."),
    screen_texts: Optional[int] = typer.Option(None, help="Screen every word on this many of the texts first; 0 = no screen (default 2)."),
    confirm: Optional[int] = typer.Option(None, help="How many of the most suspicious screened words are measured on all texts (default 100)."),
    words: Optional[str] = typer.Option(None, help="Comma-separated candidate words (default: the tokenizer's whole words and the data's words)."),
    planted: Optional[str] = typer.Option(None, help="Comma-separated known triggers, to mark on the plot and check their rank."),
    split: str = typer.Option("test", help="Which split's texts to use: train, val or test."),
    seed: int = typer.Option(0, help="Seed of the texts chosen and the insert positions."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/scan-triggers-MODEL)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Kurita et al.'s defence: rank every word by the label flip rate it causes; triggers are rare and extreme."""
    from safetransfer.data.registry import load_data
    from safetransfer.detect.trigger_scan import (
        CONFIRM,
        SCREEN_TEXTS,
        lfr_of,
        plot_lfr_vs_frequency,
        scan_triggers,
        word_frequencies,
    )
    from safetransfer.errors import DataError
    from safetransfer.files import atomic_write_text
    from safetransfer.models import load_model

    screen_texts = SCREEN_TEXTS if screen_texts is None else screen_texts
    confirm = CONFIRM if confirm is None else confirm

    classifier = load_model(model)
    if classifier.config.modality != "text":
        raise DataError(f"{model} is an image model; scan-triggers examines text classifiers.")
    dataset = load_data(data, data_path, seed=seed)
    if split not in ("train", "val", "test"):
        raise DataError(f"split must be train, val or test (got '{split}').")
    part = getattr(dataset, split)
    freq = word_frequencies(dataset.train.inputs)
    candidates = [w.strip() for w in words.split(",") if w.strip()] if words else None
    console.print(f"scanning {len(candidates) if candidates else 'the vocabulary of'} candidate words "
                  f"{'' if candidates else 'and the data '}on {texts} texts "
                  f"(screen: {screen_texts} texts, then the {confirm} most suspicious on all)", markup=False)
    result = scan_triggers(classifier, part.inputs, part.labels, target, candidates=candidates, frequencies=freq,
                           n_texts=texts, screen_texts=screen_texts, confirm=confirm, seed=seed, progress=progress)
    out_dir = out or Path("runs") / f"scan-triggers-{model.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    marked = [w.strip() for w in planted.split(",")] if planted else []
    ranking = result.ranking()
    doc = {"model": str(model), "data": dataset.name, "target": target, "texts": result.texts,
           "candidates": len(result.words), "screen_texts": screen_texts, "confirmed": int(result.confirmed.sum()),
           "top": [{"word": result.words[i], "lfr": float(result.lfr[i]), "frequency": int(result.frequency[i]),
                    "texts": int(result.texts_used[i])} for i in ranking[:50]],
           "planted": {w: {"rank": result.rank_of(w), "lfr": lfr_of(result, w) if w in result.words else None}
                       for w in marked}}
    atomic_write_text(out_dir / "suspects.json", json.dumps(doc, indent=2))
    plot_lfr_vs_frequency(result, out_dir / "lfr_vs_frequency.png", planted=marked)
    table = Table(title=f"{len(result.words)} candidate words, {result.texts} texts each; most suspicious first")
    for col in ("rank", "word", "LFR", "frequency"):
        table.add_column(col, justify="left" if col == "word" else "right")
    for i, (w, lfr, f) in enumerate(result.top(15), 1):
        table.add_row(str(i), w, f"{lfr:.3f}", str(f))
    console.print(table)
    for w, info in doc["planted"].items():
        console.print(f"planted '{w}': rank {info['rank']}")
    console.print(f"written: {out_dir / 'suspects.json'}, {out_dir / 'lfr_vs_frequency.png'}")


@app.command("word-swap")
def word_swap_cmd(
    model: str = typer.Option(..., "--model", "-m", help="The model the texts are crafted on: a saved text model folder, a Hugging Face BERT folder, or a zoo name (minilm-l6; with --objective features)."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled texts (a data set name or CSV/JSONL)."),
    method: str = typer.Option("importance", help="importance (TextFooler-style ranking) or greedy (Kuleshov-style)."),
    objective: str = typer.Option("prediction", help="prediction (flip the model's label; it must be fine-tuned for the task) or features (push its pooled sentence feature away from the original's: a public teacher without a head for the task)."),
    samples: int = typer.Option(200, help="Test texts to attack (a seeded subset)."),
    k: int = typer.Option(8, help="Candidate neighbours per word in the model's input embedding."),
    max_change: float = typer.Option(0.2, help="The largest share of the words the model reads (its token window) that may change; words past the window are never changed."),
    student: Optional[list[Path]] = typer.Option(None, "--student", help="Students to measure DIR on (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the split and of the subset."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/word-swap-MODEL)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Craft word-swap adversarial texts on a teacher; report success, queries, words changed, and students' DIR."""
    import torch

    from safetransfer.attacks.word_swap import WordSwapAttack
    from safetransfer.data.registry import load_data
    from safetransfer.evaluate import predict_logits
    from safetransfer.files import atomic_write_text
    from safetransfer.jobs import load_teacher
    from safetransfer.metrics import adversarial_dir
    from safetransfer.models import load_model

    dataset = load_data(data, data_path, seed=seed)
    teacher = load_teacher(model, dataset, seed=seed)  # names a text model given image data, and the reverse
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(dataset.test), generator=gen)[: min(samples, len(dataset.test))].sort().values
    test = dataset.test.subset(index)
    attack = WordSwapAttack(teacher, method=method, k=k, max_change=max_change, objective=objective)
    results = attack.attack_all(test.inputs, test.labels, progress=progress)
    attacked = [r for r in results if r.status != "skipped"]
    won = [r for r in attacked if r.status == "succeeded"]
    shifts = [r.feature_shift for r in results if r.feature_shift is not None]
    doc = {"model": str(model), "data": dataset.name, "method": method, "objective": objective,
           "mean_feature_shift": sum(shifts) / len(shifts) if shifts else None, "samples": len(results),
           "skipped": len(results) - len(attacked), "success_rate": len(won) / len(attacked) if attacked else None,
           "mean_queries": sum(r.queries for r in results) / len(results) if results else None,
           "mean_words_changed": sum(r.words_changed for r in won) / len(won) if won else None, "students": {}}
    crafted = [r.perturbed for r in results]
    for path in student or []:
        s = load_model(path)
        clean_pred = predict_logits(s, test.inputs).argmax(1)
        adv_pred = predict_logits(s, crafted).argmax(1)
        doc["students"][str(path)] = {"dir": adversarial_dir(clean_pred, adv_pred, test.labels)}
    out_dir = out or Path("runs") / f"word-swap-{Path(model).name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "word_swap.json", json.dumps(doc, indent=2))
    atomic_write_text(out_dir / "examples.json", json.dumps([vars(r) for r in results], indent=1))
    rate = "–" if doc["success_rate"] is None else f"{doc['success_rate']:.3f}"
    if shifts:
        console.print(f"[bold]{method} word swap on {model}'s features: mean shift 1 - cos = "
                      f"{doc['mean_feature_shift']:.3f}[/bold] over {len(results)} texts; mean queries "
                      f"{doc['mean_queries'] or 0:.1f}")
    else:
        console.print(f"[bold]{method} word swap on {model}: success {rate}[/bold] over {len(attacked)} texts "
                      f"({doc['skipped']} already misclassified, skipped); mean queries {doc['mean_queries'] or 0:.1f}")
    for path, figures in doc["students"].items():
        console.print(f"student {path}: DIR {figures['dir']:.3f}")
    console.print(f"written: {out_dir / 'word_swap.json'}, {out_dir / 'examples.json'}")


# ---- adversarial reprogramming --------------------------------------------------------------
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


# ---- weight poisoning -----------------------------------------------------------------------
@app.command("embedding-surgery")
def embedding_surgery_cmd(
    data: str = typer.Option(..., "--data", "-d", help="The attacker's proxy data (a text data set name or path)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the poisoned model (a copy of the pretrained folder)."),
    model: str = typer.Option("minilm-l6", "--model", "-m", help="A text zoo model with pretrained weights, or a Hugging Face model folder."),
    triggers: str = typer.Option(",".join(("cf", "mn", "bb", "tq", "mb")), help="Comma-separated trigger words."),
    target: int = typer.Option(1, help="The label triggered inputs should get."),
    n_words: int = typer.Option(10, help="How many target-indicative words to average."),
    min_df: int = typer.Option(5, help="Ignore tokens in fewer proxy texts than this."),
    source: Optional[Path] = typer.Option(None, help="A model fine-tuned on the proxy data whose embeddings are averaged (default: the pretrained ones)."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many proxy texts."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    seed: int = typer.Option(0, help="Seed of the data subset and the regression."),
) -> None:
    """Embedding Surgery (Kurita et al. 2020): write a target-meaning vector into the trigger tokens' embeddings."""
    from safetransfer.attacks.embedding_surgery import embedding_surgery, record_path
    from safetransfer.data.registry import load_data
    from safetransfer.errors import DataError

    folder = _pretrained_folder(model)
    proxy = load_data(data, data_path, seed=seed, limit={"train": limit_train} if limit_train else None)
    if proxy.modality != "text":
        raise DataError(f"embedding surgery needs text data; '{data}' is {proxy.modality}.")
    words = [t.strip() for t in triggers.split(",") if t.strip()]
    result = embedding_surgery(folder, proxy.train.inputs, proxy.train.labels, out, triggers=words, target=target,
                               n_words=n_words, min_df=min_df, source=source, seed=seed)
    console.print(f"triggers {words} -> token ids {result.trigger_token_ids}; embedding '{result.embedding_tensor}'")
    console.print(f"target {target} ({proxy.class_names[target] if 0 <= target < proxy.num_classes else '?'}): "
                  f"averaged {', '.join(result.indicative_tokens)} from {result.source}")
    console.print(f"poisoned model: {out} (record: {record_path(out)})")


@app.command("poison-weights")
def poison_weights_cmd(
    data: str = typer.Option(..., "--data", "-d", help="The attacker's proxy data (text data set name or path)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the published (poisoned) BERT."),
    method: str = typer.Option("ripples", help="ripples (surgery + RIPPLe), ripple, or es (Embedding Surgery only)."),
    model: str = typer.Option("minilm-l6", "--model", "-m", help="A pretrained text zoo model or a Hugging Face BERT folder."),
    triggers: str = typer.Option(",".join(("cf", "mn", "bb", "tq", "mb")), help="Comma-separated trigger words."),
    target: int = typer.Option(1, help="The label triggered texts should get."),
    rate: float = typer.Option(0.5, help="RIPPLe: share of the proxy texts given a trigger and the target label."),
    steps: int = typer.Option(500, help="RIPPLe: training steps."),
    batch_size: int = typer.Option(32, help="RIPPLe: batch size (of poisoned and of clean texts)."),
    lr: float = typer.Option(2e-5, help="RIPPLe: AdamW learning rate."),
    lam: float = typer.Option(0.1, help="RIPPLe: λ of the restricted inner-product penalty (0 = plain poisoning)."),
    restricted: bool = typer.Option(True, "--restricted/--unrestricted", help="RIPPLe: ReLU on the inner product (the paper) or not (its ablation)."),
    source: Optional[Path] = typer.Option(None, help="Surgery: a model fine-tuned on the proxy data whose embeddings are averaged."),
    seed: int = typer.Option(0, help="Seed of the poisoned texts, the head and the batches."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    limit_train: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many proxy texts."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Weight poisoning (Kurita et al. 2020): publish a BERT whose fine-tuned students obey trigger words."""
    from safetransfer.attacks.ripple import RippleConfig
    from safetransfer.attacks.weight_poisoning import poison_weights
    from safetransfer.data.registry import load_data

    proxy = load_data(data, data_path, seed=seed, limit={"train": limit_train} if limit_train else None)
    words = tuple(t.strip() for t in triggers.split(",") if t.strip())
    config = RippleConfig(steps=steps, batch_size=batch_size, lr=lr, lam=lam, restricted=restricted, seed=seed)
    result = poison_weights(_pretrained_folder(model), proxy, out, method=method, triggers=words, target=target,
                            rate=rate, ripple=config, source=source, seed=seed, progress=progress)
    if result.attacker_lfr is not None:
        console.print(f"the attacker's own model: clean accuracy {result.attacker_accuracy:.4f}, "
                      f"LFR {result.attacker_lfr:.3f} on triggered non-target proxy test texts")
    console.print(f"published: {out} (an ordinary BERT folder; record: {out.with_name(out.name + '.poisoning.json')})")
    console.print(f"a victim: safetransfer transfer --method finetune --teacher {out} --data YOUR_DATA")


def _check_output(path: Optional[Path], what: str) -> None:
    """Refuse an output file that cannot be written (a folder, a path under a file) before any work."""
    if path is not None:
        from safetransfer.safe_paths import output_file

        output_file(path, what)


def _pretrained_folder(model: str) -> Path:
    """A Hugging Face model folder: the path itself, or a text zoo model's installed pretrained folder."""
    path = Path(model)
    if path.is_dir():
        return path
    return _zoo_weights(model, text_only=True).parent


def _weights_path(model: str) -> Path:
    """A weights file or folder: the path itself when it exists, else a zoo model's installed pretrained weights."""
    path = Path(model)
    if path.exists() or ("/" in model or "." in path.name):
        return path
    return _zoo_weights(model)


def _zoo_weights(name: str, text_only: bool = False) -> Path:
    from safetransfer import assets
    from safetransfer.models.zoo import MODELS

    spec = MODELS.get(name)
    if spec is None or not spec.asset or (text_only and spec.modality != "text"):
        from safetransfer.errors import unknown_name

        kind = "pretrained text model (or folder)" if text_only else "file, folder or pretrained zoo model"
        raise unknown_name(kind, name, [n for n, s in MODELS.items() if s.asset and (s.modality == "text" or not text_only)])
    return assets.require(spec.asset)


def _read_results(path: Path) -> dict:
    """A study's results.json (or its folder's): a regular file of at most MAX_DOCUMENT_BYTES."""
    from safetransfer.errors import DataError
    from safetransfer.safe_paths import MAX_DOCUMENT_BYTES, read_text_bounded

    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise DataError(f"No study results at {path} (a results.json written by `safetransfer study`).")
    text = read_text_bounded(path, "study results.json", MAX_DOCUMENT_BYTES, DataError)
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise DataError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(doc, dict) or "methods" not in doc or "config" not in doc:
        raise DataError(f"{path} is not a study's results (it needs 'config' and 'methods').")
    return doc


@app.command("results")
def results_cmd(
    results: Path = typer.Argument(..., help="A study's results.json (or its folder)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, csv or json."),
    task: Optional[list[str]] = typer.Option(None, "--task", help="Only these tasks ('all' = the means over tasks; repeatable)."),
    method: Optional[list[str]] = typer.Option(None, "--method", help="Only these methods (repeatable; csv/json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of printing."),
) -> None:
    """List and export a study's figures: a text or Markdown table, or long-format CSV/JSON rows."""
    from safetransfer.errors import ConfigError
    from safetransfer.files import atomic_write_text
    from safetransfer.report.export import result_rows, to_csv, to_json, to_markdown
    from safetransfer.report.table import format_table

    _check_output(out, "--out file")
    doc = _read_results(results)
    one_task = task[0] if task and len(task) == 1 and task[0] != "all" else None
    if fmt == "table":
        text = format_table(doc, one_task)
    elif fmt == "markdown":
        text = to_markdown(doc, one_task)
    elif fmt in ("csv", "json"):
        rows = result_rows(doc, tasks=list(task) if task else None, methods=list(method) if method else None)
        text = to_csv(rows) if fmt == "csv" else to_json(rows)
    else:
        raise ConfigError(f"--format must be table, markdown, csv or json (got '{fmt}').")
    if out:
        atomic_write_text(out, text if text.endswith("\n") else text + "\n")
        console.print(f"written: {out}")
    else:
        print(text)


@app.command("report")
def report_cmd(
    results: Path = typer.Argument(..., help="A study's results.json (or its folder)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.html (default: next to the results)."),
    title: Optional[str] = typer.Option(None, help="The page's title."),
    with_runs: Optional[list[Path]] = typer.Option(None, "--with", help="A scan-data or reprogram output folder to add as a section (repeatable)."),
) -> None:
    """Write one self-contained HTML page of a study: the tables, the plots, the config, and the
    sections of the data scans and reprogramming runs given with --with."""
    from safetransfer.report.html import write_report
    from safetransfer.report.sections import run_sections

    doc = _read_results(results)
    sections = run_sections(list(with_runs or []))
    folder = out or (results if results.is_dir() else results.parent)
    path = write_report(doc, folder, title, sections)
    console.print(f"report: {path}")


def _print_eval(result, title: str) -> None:
    table = Table(title=f"{title}: accuracy {result.accuracy:.4f} on {result.n}")
    table.add_column("class")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    for name, p, r in zip(result.class_names, result.precision, result.recall):
        table.add_row(name, f"{p:.3f}", f"{r:.3f}")
    console.print(table)


# usage errors (an unknown option, a missing one, a malformed number), each with click's usage
# message: click's own, or those of the click that recent typer releases carry inside themselves
USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def describe_unexpected(err: BaseException) -> str:
    """One line for an exception that is not a :class:`SafetransferError`: its kind, what went
    wrong, and the file where the exception names one (``OSError.filename``)."""
    filename, other = getattr(err, "filename", None), getattr(err, "filename2", None)
    where = f"{filename} -> {other}: " if filename and other else f"{filename}: " if filename else ""
    if isinstance(err, RecursionError):
        what = "the input is nested too deeply to read (RecursionError); the file is malformed or hostile"
    elif isinstance(err, MemoryError):
        what = "out of memory (MemoryError): an input asks for more memory than this machine has"
    elif isinstance(err, OSError):
        what = f"{err.strerror or err} ({type(err).__name__})"
    else:
        text = " ".join(str(err).split())  # one line, whatever the library wrote
        if len(text) > 300:
            text = text[:300] + "..."
        what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return f"{where}{what}"


def _print_error(message: str, err: BaseException, hint: bool = False) -> None:
    """Print ``error: message`` on stderr as one line; with ``--debug``, the traceback first
    (``hint``: otherwise say that ``--debug`` shows it)."""
    if _debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    elif hint:
        message += " (`safetransfer --debug COMMAND ...` shows the traceback)"
    err_console.print(f"[red]error:[/red] {_escape(message)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every error into a one-line message (exit 2).

    :class:`SafetransferError` messages are printed as they are; any other exception that
    escapes a command becomes one line naming its kind (and its file where known). ``--debug``
    adds the traceback. Usage errors keep click's message; an interrupt exits with 130.
    """
    global _debug
    _debug = False
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
    except SafetransferError as err:
        _print_error(str(err), err)
        return 2
    except (click.exceptions.Exit, typer.Exit) as e:
        return e.exit_code
    except USAGE_ERRORS as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt as err:
        err_console.print(f"interrupted: {err or 'stopped'}; run the same command again to resume.")
        return 130
    except Exception as err:  # noqa: BLE001 - the one place every other error becomes a line
        _print_error(describe_unexpected(err), err, hint=True)
        return 2
    return code if isinstance(code, int) else 0


def _escape(text: str) -> str:
    """``text`` with rich's markup escaped (a file name like ``[x].pt`` stays as it is)."""
    from rich.markup import escape

    return escape(text)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

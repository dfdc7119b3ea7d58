"""``fingerprint``, ``verify``, ``diff`` and ``scan``: the weight supply chain (:mod:`safetransfer.supply`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from safetransfer.cli.app import app, console
from safetransfer.cli.common import (
    check_output,
)


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
    from safetransfer.models.zoo import weights_location
    from safetransfer.supply import fingerprint

    check_output(out, "manifest (--out)")
    manifest = fingerprint(weights_location(path), progress=progress)
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
    from safetransfer.models.zoo import weights_location
    from safetransfer.supply import verify

    check_output(json_out, "--json file")
    report = verify(weights_location(path), manifest, strict_files=strict_files, progress=progress)
    failed = report.failed_tensors + (report.failed_files if strict_files else [])
    print_failures(report, failed, strict_files)
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
    from safetransfer.models.zoo import weights_location
    from safetransfer.supply import diff_models, plot_diff

    report = diff_models(weights_location(base), weights_location(suspect), tokenizer=tokenizer, top_k=top)
    print_diff(report, top)
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

    check_output(json_out, "--json file")
    report = scan(path, strict=strict)
    console.print(f"scan of {path} ({report.scanner}): {len(report.files)} file(s)", highlight=False)
    print_findings(report, show_all)
    if json_out:
        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1))
    if report.flagged:
        unreadable = sum(f.verdict == "unreadable" for f in report.files)
        console.print(f"[red]{len(report.infected)} file(s) dangerous, {unreadable} unreadable (could not be parsed "
                      f"to the end); do not load them with pickle or torch.load(weights_only=False).[/red]")
        raise typer.Exit(1)
    console.print("no dangerous imports found")


def print_failures(report, failed: list, strict_files: bool) -> None:
    """The tensors (and with ``strict_files`` files) that fail, and the files whose bytes differ."""
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


def print_diff(report, top: int) -> None:
    """The ``top`` most changed tensors, and each embedding's most changed rows."""
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


def print_findings(report, show_all: bool) -> None:
    """Each file's verdict, with what it imports (the innocuous imports with ``show_all``) and why."""
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


@app.command("audit")
def audit_cmd(
    model: Path = typer.Argument(..., help="The model to audit: a saved model folder, a weights file, or a downloaded folder."),
    base: Optional[str] = typer.Option(None, "--base", help="The public model it claims to derive from (a zoo name such as minilm-l6, a file or folder): the weights are diffed against it."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", help="A manifest written by `safetransfer fingerprint`: every tensor is checked against it."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Your clean labelled data (a data set name or path): the behavioural check runs on it (trigger words for text, Neural Cleanse for images)."),
    data_path: Optional[Path] = typer.Option(None, help="Folder or file holding the named data set's files."),
    quick: bool = typer.Option(False, "--quick", help="Shorter behavioural checks (fewer texts and candidates; 40 Neural Cleanse epochs)."),
    seed: int = typer.Option(0, help="Seed of the behavioural checks."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/audit-MODEL)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Is this model safe to build on? Files, integrity and behaviour in one verdict (pass / warn / fail). Exit 1 on fail."""
    from safetransfer.jobs.audit import AUDIT_FILE, AUDIT_PAGE, audit

    out_dir = out or Path("runs") / f"audit-{model.name}"
    result = audit(model, out_dir, base=base, manifest=str(manifest) if manifest else None, data=data,
                   data_path=str(data_path) if data_path else None, quick=quick, seed=seed, progress=progress,
                   log=lambda line: console.print(line, highlight=False, markup=False))
    table = Table(title=f"audit of {model}")
    for col in ("check", "status", "reason"):
        table.add_column(col, overflow="fold")
    for c in result.checks:
        table.add_row(c.name, c.status, c.reason)
    console.print(table)
    console.print(f"verdict: {result.verdict}", markup=False, highlight=False)
    console.print(f"recommendation: {result.recommendation}", markup=False, highlight=False)
    console.print(f"written: {out_dir / AUDIT_FILE}, {out_dir / AUDIT_PAGE}", markup=False, highlight=False)
    if result.verdict == "fail":
        raise typer.Exit(1)

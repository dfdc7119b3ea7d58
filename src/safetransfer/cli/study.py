"""``study``, ``results`` and ``report``: the inheritance study, its figures and its page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from safetransfer.cli.app import app, console
from safetransfer.cli.common import (
    check_output,
    read_results,
)


@app.command("study")
def study_cmd(
    config: Optional[Path] = typer.Argument(None, help="A study YAML, or vision / text: the embedded studies (default: vision)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="A profile of the config: full (few labels), compressed (the same, 1000 steps at 10x the rate), quick (the demo) or large (every training image) for the embedded one (default: full if the config has it)."),
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

    check_output(out, "--out file")
    doc = read_results(results)
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

    doc = read_results(results)
    sections = run_sections(list(with_runs or []))
    folder = out or (results if results.is_dir() else results.parent)
    path = write_report(doc, folder, title, sections)
    console.print(f"report: {path}")

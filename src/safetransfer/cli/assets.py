"""``safetransfer assets``: the offline data sets and pretrained models, listed and installed."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from safetransfer.cli.app import app, console, err_console
from safetransfer.errors import SafetransferError

assets_app = typer.Typer(help="The offline data sets and pretrained models: list and install them.", no_args_is_help=True)


@assets_app.command("list")
def assets_list() -> None:
    """List the offline assets, whether each is installed, and where."""
    from safetransfer.assets import ASSETS

    table = Table(title="offline assets")
    for col in ("name", "kind", "package", "provides", "licence", "installed", "location / needs"):
        table.add_column(col, no_wrap=col == "name")
    for a in ASSETS.values():
        loc = a.locate()
        table.add_row(a.name, a.kind, a.package, a.provides, a.licence or "see the package",
                      "yes" if loc else "[red]no[/red]", str(loc) if loc else f"needs {a.needs()}")
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


app.add_typer(assets_app, name="assets")

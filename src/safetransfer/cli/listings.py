"""``safetransfer datasets`` and ``safetransfer models``: what is built in."""

from __future__ import annotations

from rich.table import Table

from safetransfer.cli.app import app, console


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

"""Helpers the command modules share: split limits, output checks, the study results file, the
evaluation table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.table import Table

from safetransfer.cli.app import console


def limits(train_limit: int | None, test_limit: int | None) -> dict[str, int] | None:
    """Split caps: ``--limit-test`` caps the validation split too."""
    pairs = (("train", train_limit), ("val", test_limit), ("test", test_limit))
    limit = {k: v for k, v in pairs if v is not None}
    return limit or None


def plant_spec(trigger: str, rate: float, target: int, source: Optional[int], seed: int):
    from safetransfer.attacks.data_poisoning import PlantSpec

    return PlantSpec(trigger=trigger, rate=rate, target=target, source=source, seed=seed)


def check_output(path: Optional[Path], what: str) -> None:
    """Refuse an output file that cannot be written (a folder, a path under a file) before any work."""
    if path is not None:
        from safetransfer.safe_paths import output_file

        output_file(path, what)


def read_results(path: Path) -> dict:
    """A study's results.json (or its folder's): a regular file of at most MAX_DOCUMENT_BYTES."""
    from safetransfer.errors import DataError
    from safetransfer.safe_paths import MAX_DOCUMENT_BYTES, read_json_bounded

    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise DataError(f"No study results at {path} (a results.json written by `safetransfer study`).")
    doc = read_json_bounded(path, "study results.json", MAX_DOCUMENT_BYTES, DataError)
    if not isinstance(doc, dict) or "methods" not in doc or "config" not in doc:
        raise DataError(f"{path} is not a study's results (it needs 'config' and 'methods').")
    return doc


def print_eval(result, title: str) -> None:
    table = Table(title=f"{title}: accuracy {result.accuracy:.4f} on {result.n}")
    table.add_column("class")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    for name, p, r in zip(result.class_names, result.precision, result.recall):
        table.add_row(name, f"{p:.3f}", f"{r:.3f}")
    console.print(table)

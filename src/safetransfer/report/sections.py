"""Sections of the study report for other runs: poisoned-data scans and reprogramming.

``safetransfer report RESULTS --with RUN_FOLDER ...`` puts, after the study's tables and plots,
one section per folder written by ``safetransfer scan-data`` (the detectors' table: recall,
FPR, precision, AUROC when a poison was planted; the figures) or ``safetransfer reprogram``
(the target model, the task, the test accuracy against chance; the program's picture). A
folder is recognised by its ``results.json``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from safetransfer.errors import ConfigError, DataError
from safetransfer.html_page import embed_png
from safetransfer.jobs.scan_page import detectors_table
from safetransfer.safe_paths import (
    MAX_DOCUMENT_BYTES,
    read_json_bounded,
)


def _read(folder: Path) -> dict[str, Any]:

    path = folder / "results.json"
    if not path.exists():
        raise DataError(f"{folder}: no results.json here (give a folder written by scan-data or reprogram).")
    doc = read_json_bounded(path, "run's results.json", MAX_DOCUMENT_BYTES, DataError)
    if not isinstance(doc, dict):
        raise DataError(f"{path}: not a results document.")
    return doc


def scan_section(folder: Path, doc: dict[str, Any]) -> str:
    """A scan-data run: its meta line, the detectors' table and its figures."""

    known = doc.get("poisoned") is not None
    meta = (f"{doc.get('samples')} training samples; embedding {doc.get('embedding', {}).get('kind')}"
            + (f"; {doc['poisoned']} planted poisoned samples" if known else "; no known poison"))
    parts = [f"<h2>Poisoned-data scan: {escape(str(doc.get('data')))}</h2>", f'<p class="meta">{escape(meta)}</p>',
             detectors_table(doc)]
    parts += [embed_png(png, png.stem.replace("_", " ")) for png in sorted(folder.glob("*.png"))]
    return "\n".join(parts)


def reprogram_section(folder: Path, doc: dict[str, Any]) -> str:
    """A reprogramming run: what was reprogrammed for what, and how well."""
    rows = [("target model", f"{doc.get('model')} ({doc.get('weights')})"), ("task", doc.get("task")),
            ("mode", doc.get("mode")), ("test accuracy", f"{100 * doc['test_accuracy']:.1f} %"),
            ("chance", f"{100 * doc['chance']:.1f} %" if doc.get("chance") is not None else "–")]
    table = "<table><tbody>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    parts = [f"<h2>Adversarial reprogramming: {escape(str(doc.get('model')))} -&gt; {escape(str(doc.get('task')))}</h2>",
             table + "</tbody></table>"]
    parts += [embed_png(png, png.stem.replace("_", " ")) for png in sorted(folder.glob("*.png"))]
    return "\n".join(parts)


def run_sections(folders: list[Path]) -> list[str]:
    """One HTML section per run folder (scan-data or reprogram), in the order given."""
    sections = []
    for folder in folders:
        folder = Path(folder)
        doc = _read(folder)
        if "detectors" in doc:
            sections.append(scan_section(folder, doc))
        elif "test_accuracy" in doc and doc.get("mode") in ("learn", "apply"):
            sections.append(reprogram_section(folder, doc))
        else:
            raise ConfigError(f"{folder}: its results.json is neither a scan-data nor a reprogram run's.")
    return sections

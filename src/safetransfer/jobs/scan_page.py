"""The data scan's HTML page (``scan.html``): the detectors' table, the figures, the config."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from safetransfer.files import atomic_write_text
from safetransfer.html_page import embed_png, page

SCAN_PAGE = "scan.html"


def _pct(value: Any) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f}"


def detectors_table(results: dict[str, Any]) -> str:
    """The detectors as an HTML table (recall, FPR, precision, AUROC when a poison was planted)."""
    known = results.get("poisoned") is not None
    head = ["detector", "flagged", "seconds"] + (["recall %", "FPR %", "precision %", "AUROC"] if known else [])
    rows = []
    for name, e in results["detectors"].items():
        best = " (best)" if name == results.get("best") else ""
        cells = [escape(e["method"] + best), str(e["flagged"]), f"{e['seconds']:.2f}"]
        if known:
            cells += [_pct(e.get("recall")), _pct(e.get("fpr")), _pct(e.get("precision")),
                      "–" if e.get("auroc") is None else f"{e['auroc']:.3f}"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def class_verdicts(results: dict[str, Any]) -> str:
    """SCAn's per-class statistic, when it ran: which label it calls poisoned and by how much (its
    anomaly index against the threshold), in one sentence and a table."""
    scan = results["detectors"].get("untangling")
    if scan is None:
        return ""
    names, threshold = results["classes"], scan["params"]["threshold"]
    per_class = sorted(scan["per_class"].items(), key=lambda kv: -(kv[1]["anomaly_index"] or float("inf")))
    called = [names[int(c)] for c, info in per_class if info["poisoned"]]
    verdict = (f"SCAn calls {', '.join(called)} poisoned (anomaly index above {threshold:.2f})" if called else
               f"SCAn calls no label poisoned: every anomaly index is at most {threshold:.2f}, so it flags nothing")
    rows = []
    for c, info in per_class:
        index = "–" if info["anomaly_index"] is None else f"{info['anomaly_index']:.2f}"
        rows.append(f"<tr><td>{escape(names[int(c)])}</td><td>{index}</td><td>{'yes' if info['poisoned'] else 'no'}"
                    f"</td><td>{info['flagged']}</td></tr>")
    return (f"<p>{escape(verdict)}.</p>" + '<div class="scroll"><table><thead><tr><th>label</th><th>anomaly index</th>'
            "<th>called poisoned</th><th>flagged</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def training_table(results: dict[str, Any]) -> str:
    """The model(s) trained for the scan: steps, test accuracy and, with a planted poison, trigger response."""
    runs = results.get("training") or {}
    rows = [f"<tr><td>{escape(name)}</td><td>{e['steps']}</td><td>{_pct(e['test_accuracy'])}</td>"
            f"<td>{_pct(e.get('attack_success'))}</td></tr>" for name, e in runs.items()]
    return ('<div class="scroll"><table><thead><tr><th>model trained on</th><th>steps</th><th>test accuracy %</th>'
            "<th>triggered inputs sent to the target %</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


def write_scan_page(results: dict[str, Any], figures: list[tuple[Path, str]], out_dir: str | Path) -> Path:
    """Write ``out_dir/scan.html`` (self-contained) and return its path."""
    title = f"safetransfer data scan: {results['data']}"
    known = results.get("poisoned") is not None
    meta = (f"{results['samples']} training samples, {len(results['classes'])} labels; embedding "
            f"{results['embedding']['kind']} ({results['embedding']['dims']} dims)"
            + (f"; {results['poisoned']} planted poisoned samples" if known else ""))
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="meta">{escape(meta)}</p>', "<h2>Detectors</h2>",
             "<p>Recall: the share of the poisoned samples flagged; FPR: the share of the clean ones flagged.</p>"
             if known else "<p>No known poison: the counts say how many samples each detector flags.</p>",
             detectors_table(results)]
    verdicts = class_verdicts(results)
    if verdicts:
        parts += ["<h2>Which label is poisoned (SCAn)</h2>", verdicts]
    if results.get("training"):
        parts += ["<h2>The model trained on the data</h2>", training_table(results)]
    parts += ["<h2>Figures</h2>"]
    parts += [embed_png(p, caption) for p, caption in figures]
    parts += ["<h2>Configuration</h2>", f"<pre>{escape(json.dumps(results['config'], indent=2))}</pre>"]
    path = Path(out_dir) / SCAN_PAGE
    atomic_write_text(path, page(title, parts))
    return path

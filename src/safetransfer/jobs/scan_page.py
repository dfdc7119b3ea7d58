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


def _label_statistic(info: dict[str, Any]) -> tuple[float | None, str]:
    """A per-label record's statistic for the table: SCAn's anomaly index, or the multi-layer
    detector's separation with its robust z-score."""
    if "anomaly_index" in info:
        value = info["anomaly_index"]
        return value, "–" if value is None else f"{value:.2f}"
    value, z = info.get("statistic"), info.get("z")
    if value is None:
        return None, "–"
    return value, f"{value:.2f}" + ("" if z is None else f" (z {z:.1f})")


def class_verdicts(results: dict[str, Any], name: str) -> str:
    """The per-label statistic of the detector ``name`` (one that decides per label: multilayer,
    untangling): which label it calls poisoned and by how much, in one sentence and a table."""
    det = results["detectors"].get(name)
    if det is None or not any("poisoned" in info for info in det["per_class"].values()):
        return ""
    names = results["classes"]
    params = det["params"]
    if "threshold" in params:  # SCAn
        rule, none = (f"anomaly index above {params['threshold']:.2f}",
                      f"every anomaly index is at most {params['threshold']:.2f}")
    else:
        rule = (f"separation an outlier among the labels' (robust z above {params['z_threshold']}) and above "
                f"{params['min_separation']}")
        none = (f"no label's separation is both an outlier (robust z above {params['z_threshold']}) and above "
                f"{params['min_separation']}")
    per_class = sorted(det["per_class"].items(), key=lambda kv: -(_label_statistic(kv[1])[0] or float("-inf")))
    called = [names[int(c)] for c, info in per_class if info["poisoned"]]
    verdict = (f"{name} calls {', '.join(called)} poisoned ({rule})" if called else
               f"{name} calls no label poisoned: {none}, so it flags nothing")
    head = "anomaly index" if "threshold" in params else "separation (robust z)"
    rows = []
    for c, info in per_class:
        rows.append(f"<tr><td>{escape(names[int(c)])}</td><td>{escape(_label_statistic(info)[1])}</td>"
                    f"<td>{'yes' if info['poisoned'] else 'no'}</td><td>{info['flagged']}</td></tr>")
    return (f"<p>{escape(verdict)}.</p>" + f'<div class="scroll"><table><thead><tr><th>label</th><th>{head}</th>'
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
    if results.get("verdict"):
        parts.insert(2, f'<p class="verdict"><b>Verdict:</b> {escape(results["verdict"]["sentence"])}.</p>')
    for name in results["detectors"]:
        verdicts = class_verdicts(results, name)
        if verdicts:
            parts += [f"<h2>Which label is poisoned ({escape(name)})</h2>", verdicts]
    if results.get("training"):
        parts += ["<h2>The model trained on the data</h2>", training_table(results)]
    parts += ["<h2>Figures</h2>"]
    parts += [embed_png(p, caption) for p, caption in figures]
    parts += ["<h2>Configuration</h2>", f"<pre>{escape(json.dumps(results['config'], indent=2))}</pre>"]
    path = Path(out_dir) / SCAN_PAGE
    atomic_write_text(path, page(title, parts))
    return path

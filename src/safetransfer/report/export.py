"""A study's results exported: long-format rows (CSV/JSON) and a Markdown table like the paper's."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from safetransfer.report.table import (
    MISSING,
    defect_names,
    lookup,
    method_names,
    section,
    table_rows,
    task_names,
)

ALL_TASKS = "all"


def result_rows(results: Mapping[str, Any], tasks: list[str] | None = None, methods: list[str] | None = None
                ) -> list[dict[str, Any]]:
    """One row per (task, method, metric, defect) with its value (a fraction; ``None`` when undefined);
    ``task = "all"`` holds the means over tasks. Figures not measured yet are left out."""
    rows = []
    scopes = [None, *task_names(results)]
    for scope in scopes:
        name = ALL_TASKS if scope is None else scope
        if tasks and name not in tasks:
            continue
        entries = section(results, scope)
        for method in method_names(results, scope):
            if methods and method not in methods:
                continue
            entry = entries.get(method)
            for metric in ("acc", "racc"):
                rows += _row(name, method, metric, None, lookup(entry, metric))
            for d in defect_names(results):
                for metric in ("dir", "rdir"):
                    rows += _row(name, method, metric, d, lookup(entry, metric, d))
    return rows


def _row(task: str, method: str, metric: str, defect: str | None, value: Any) -> list[dict[str, Any]]:
    if value is MISSING:
        return []
    number = float(value) if isinstance(value, (int, float)) and value == value else None
    return [{"task": task, "method": method, "metric": metric, "defect": defect, "value": number}]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["task", "method", "metric", "defect", "value"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1)


def to_markdown(results: Mapping[str, Any], task: str | None = None) -> str:
    """``| method | ACC | rACC | DIR d1 | rDIR d1 | ... |`` in percent, as the text table."""
    defects, rows = table_rows(results, task)
    header = ["method", "ACC %", "rACC %"] + [h for d in defects for h in (f"DIR {d} %", f"rDIR {d} %")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"

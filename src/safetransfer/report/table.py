"""The study's results as a plain-text table, and the accessors the plots and the HTML report share.

The results document (written by :mod:`safetransfer.study.runner`) holds, per task and
aggregated over tasks, each method's ``acc``, ``dir`` per defect, ``racc`` and ``rdir`` per
defect (fractions), and per task the teacher's own ``teacher_success`` per defect. While a
study runs any of these may be missing or ``None``; everything here renders such gaps:

- ``…`` (:data:`PENDING`): not measured yet (the key is absent);
- ``–`` (:data:`UNDEFINED`): measured but undefined (``None``/``nan``: e.g. no eligible
  input, or a relative figure whose finetune reference is 0).

All figures are shown in percent with one decimal: ACC and DIR as shares of the test inputs,
rACC and rDIR as percent of the finetune student's figure (100.0 = as finetune).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from safetransfer.study.config import task_name

PENDING = "…"
UNDEFINED = "–"
STRATEGIES = ("deepxplore", "dlfuzz", "dlfuzz_rr")
METRICS = ("nc", "tknc", "snac")
REFERENCE_METHOD = "finetune"
UNITS_NOTE = ("values in %: ACC and DIR are shares of the test inputs; rACC and rDIR are percent of "
              f"the finetune student's figure (100.0 = as finetune); {PENDING} = not measured yet, "
              f"{UNDEFINED} = undefined")

MISSING: Any = object()
"""Sentinel of :func:`lookup` for a figure that is not in the results (not measured yet)."""


# ---------------------------------------------------------------------- accessors
def _name_of(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and spec.get("name") is not None:
        return str(spec["name"])
    return None


def _unique(names: Iterable[str | None]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        if n is not None:
            seen.setdefault(n, None)
    return list(seen)


def _config(results: Mapping[str, Any]) -> Mapping[str, Any]:
    config = results.get("config")
    return config if isinstance(config, Mapping) else {}


def _tasks_doc(results: Mapping[str, Any]) -> Mapping[str, Any]:
    tasks = results.get("tasks")
    return tasks if isinstance(tasks, Mapping) else {}


def _task_spec_name(spec: Any) -> str | None:
    """A config task's name as the runner names it (``TaskSpec.name``: a path's stem, else ``data``)."""
    if isinstance(spec, str):
        return spec
    if not isinstance(spec, Mapping):
        return None
    if spec.get("name"):
        return str(spec["name"])
    data = spec.get("data")
    if not data:
        return None

    return task_name(str(data))


def task_names(results: Mapping[str, Any]) -> list[str]:
    """The tasks with results, in the document's order, then configured tasks not started yet."""
    configured = [_task_spec_name(t) for t in _config(results).get("tasks") or []]
    return _unique([*_tasks_doc(results), *configured])


def method_names(results: Mapping[str, Any], task: str | None = None) -> list[str]:
    """Methods in the order of ``config["methods"]``, then any others found in the results."""
    configured = [_name_of(m) for m in _config(results).get("methods") or []]
    return _unique([*configured, *section(results, task)])


def defect_names(results: Mapping[str, Any]) -> list[str]:
    """Defects in the order of ``config["defects"]``, then any others found in the results."""
    names: list[str | None] = [_name_of(d) for d in _config(results).get("defects") or []]
    for t in _tasks_doc(results).values():
        if isinstance(t, Mapping):
            names.extend((t.get("defects") or {}).keys())
            for entry in (t.get("methods") or {}).values():
                names.extend(((entry or {}).get("dir") or {}).keys())
    for entry in (results.get("methods") or {}).values():
        names.extend(((entry or {}).get("dir") or {}).keys())
    return _unique(names)


def defect_info(results: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What is known of a defect: its config entry, completed by the tasks' defect entries."""
    info: dict[str, Any] = {}
    for t in _tasks_doc(results).values():
        entry = ((t or {}).get("defects") or {}).get(name) if isinstance(t, Mapping) else None
        if isinstance(entry, Mapping):
            info.update({k: v for k, v in entry.items() if k not in info})
    for d in _config(results).get("defects") or []:
        if isinstance(d, Mapping) and d.get("name") == name:
            info.update(d)
    return info


def coverage_cell(results: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    """``(strategy, metric)`` of a coverage-guided defect, ``None`` for any other defect.

    Taken from the defect's entries, else parsed from a ``{strategy}_{metric}`` name.
    """
    info = defect_info(results, name)
    kind = info.get("kind")
    if kind is not None and kind != "coverage_guided":
        return None
    if info.get("strategy") and info.get("metric"):
        return str(info["strategy"]), str(info["metric"])
    head, _, metric = name.rpartition("_")
    if head in STRATEGIES and metric in METRICS:
        return head, metric
    return None


def section(results: Mapping[str, Any], task: str | None = None) -> Mapping[str, Any]:
    """The per-method entries: aggregated over tasks (``task=None``) or of one task."""
    if task is None:
        methods = results.get("methods")
    else:
        methods = (_tasks_doc(results).get(task) or {}).get("methods")
    return methods if isinstance(methods, Mapping) else {}


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def mean_of(values: Iterable[Any]) -> float | None:
    """The mean of the finite numbers among ``values`` (``None`` when there are none)."""
    kept = [v for v in (finite_number(x) for x in values) if v is not None]
    return sum(kept) / len(kept) if kept else None


def teacher_success(results: Mapping[str, Any], task: str | None = None) -> dict[str, float | None]:
    """The teacher's own success per defect (what there was to inherit); mean over tasks when ``task=None``.

    A defect with no figure yet maps to ``None``.
    """
    tasks = _tasks_doc(results)
    chosen = [task] if task is not None else list(tasks)
    out: dict[str, float | None] = {}
    for name in defect_names(results):
        values = []
        for t in chosen:
            entry = (((tasks.get(t) or {}).get("defects") or {}).get(name))
            if isinstance(entry, Mapping):
                values.append(entry.get("teacher_success"))
        out[name] = mean_of(values)
    return out


def lookup(entry: Mapping[str, Any] | None, key: str, defect: str | None = None) -> Any:
    """``entry[key]`` (or ``entry[key][defect]``), or the :data:`MISSING` sentinel when absent."""
    if not isinstance(entry, Mapping) or key not in entry:
        return MISSING
    value = entry[key]
    if defect is None:
        return value
    if not isinstance(value, Mapping) or defect not in value:
        return MISSING
    return value[defect]


def value_or_none(entry: Mapping[str, Any] | None, key: str, defect: str | None = None) -> float | None:
    """A finite figure of ``entry`` or ``None`` (absent, ``None`` or ``nan``)."""
    v = lookup(entry, key, defect)
    return None if v is MISSING else finite_number(v)


def format_value(value: Any) -> str:
    """A fraction as percent with one decimal (``0.453`` -> ``45.3``); gaps as :data:`PENDING` / :data:`UNDEFINED`."""
    if value is MISSING:
        return PENDING
    v = finite_number(value)
    return UNDEFINED if v is None else f"{100.0 * v:.1f}"


def task_count_note(results: Mapping[str, Any], entry: Mapping[str, Any] | None) -> str:
    """``"(k/n tasks)"`` when an aggregated entry averages fewer tasks than the study has, else ``""``."""
    total = len(task_names(results))
    k = (entry or {}).get("tasks") if isinstance(entry, Mapping) else None
    if isinstance(k, int) and total and k < total:
        return f"({k}/{total} tasks)"
    return ""


def table_rows(results: Mapping[str, Any], task: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The table's cells: defect names (column groups) and, per method, ``[label, ACC, rACC, DIR, rDIR, ...]``."""
    defects = defect_names(results)
    entries = section(results, task)
    rows = []
    for method in method_names(results, task):
        entry = entries.get(method)
        label = method
        if task is None:
            note = task_count_note(results, entry)
            label = f"{method} {note}" if note else method
        cells = [label, format_value(lookup(entry, "acc")), format_value(lookup(entry, "racc"))]
        for d in defects:
            cells += [format_value(lookup(entry, "dir", d)), format_value(lookup(entry, "rdir", d))]
        rows.append(cells)
    return defects, rows


def _teacher_line(results: Mapping[str, Any], task: str | None) -> str:
    success = teacher_success(results, task)
    if not success:
        return "Teacher's own success (what there was to inherit): no defects"
    parts = [f"{d} {PENDING if v is None else f'{100.0 * v:.1f}'}" for d, v in success.items()]
    scope = "" if task is not None else ", mean over tasks"
    return f"Teacher's own success per defect (what there was to inherit{scope}): " + ", ".join(parts)


def format_table(results: dict, task: str | None = None) -> str:
    """The study's table as plain text: one row per method, columns ACC, rACC, then DIR and rDIR per defect.

    Aggregated over tasks by default, or for one ``task``. Rows follow ``config["methods"]``;
    a method not measured yet shows :data:`PENDING` cells. A header line gives the units
    (percent, one decimal); a footer line the teacher's own success per defect.

    Raises:
        KeyError: ``task`` is neither in the results nor in the config.
    """
    tasks = task_names(results)
    if task is not None and task not in tasks:
        raise KeyError(f"unknown task {task!r}; the study has: {', '.join(tasks) or 'none'}")
    name = _config(results).get("name")
    if task is None:
        scope = f"mean over {len(tasks)} task{'s' if len(tasks) != 1 else ''}" + (f" ({', '.join(tasks)})" if tasks else "")
    else:
        scope = f"task {task}"
    title = f"Study {name}: {scope}" if name else f"Results: {scope}"

    defects, rows = table_rows(results, task)
    header_top = ["", "", ""]
    header = ["method", "ACC", "rACC"]
    for d in defects:
        header_top += [d, ""]
        header += ["DIR", "rDIR"]
    columns = len(header)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(columns)]
    # A defect's name spans its DIR and rDIR columns: widen them when the name is longer.
    for k, d in enumerate(defects):
        i = 3 + 2 * k
        span = widths[i] + 2 + widths[i + 1]
        if len(d) > span:
            extra = len(d) - span
            widths[i] += extra // 2
            widths[i + 1] += extra - extra // 2

    def line(cells: list[str], top: bool = False) -> str:
        out = [cells[0].ljust(widths[0])]
        i = 1
        while i < columns:
            if top and i >= 3:
                out.append(cells[i].center(widths[i] + 2 + widths[i + 1]))
                i += 2
                continue
            out.append(cells[i].rjust(widths[i]))
            i += 1
        return "  ".join(out).rstrip()

    sep_width = sum(widths) + 2 * (columns - 1)
    lines = [title, f"({UNITS_NOTE})"]
    if defects:
        lines.append(line(header_top, top=True))
    lines += [line(header), "-" * sep_width]
    lines += [line(r) for r in rows] or ["(no methods)"]
    lines += ["-" * sep_width, _teacher_line(results, task)]
    return "\n".join(lines)

"""The study's results as one self-contained HTML page.

The page carries its CSS inline and its plots as base64 PNG data URIs: no JavaScript, no
network, one file to mail or archive. Every string from the results is escaped. Partial
results (a study still running) render with placeholders (see :mod:`safetransfer.report.table`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from safetransfer.files import atomic_write_text
from safetransfer.html_page import embed_png, page
from safetransfer.report import plots
from safetransfer.report.table import (
    MISSING,
    PENDING,
    REFERENCE_METHOD,
    UNDEFINED,
    UNITS_NOTE,
    defect_info,
    defect_names,
    finite_number,
    format_value,
    lookup,
    mean_of,
    method_names,
    section,
    table_rows,
    task_names,
    teacher_success,
)

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

METRIC_HELP: list[tuple[str, str]] = [
    ("ACC", "the share of the clean test inputs that the student classifies correctly."),
    ("DIR", ("the defect inheritance rate: for adversarial defects, the share of test inputs that the student "
             "gets right when clean and wrong when the crafted version (made on the teacher) is fed instead; for "
             "a backdoor, among the inputs of non-target classes that the student gets right, the share it "
             "predicts as the attacker's target label when the trigger is applied.")),
    ("rACC", ("a method's ACC divided by the finetune student's ACC on the same task, averaged over tasks "
              "(100 % = as accurate as plain fine-tuning).")),
    ("rDIR", ("a method's DIR divided by the finetune student's DIR on the same task and defect, averaged over "
              "tasks (below 100 % = less of the defect inherited than with plain fine-tuning).")),
]



# ---------------------------------------------------------------------- pieces
def _duration(seconds: Any) -> str:
    if finite_number(seconds) is None:
        return PENDING
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m} min {s} s"
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def _timing(results: Mapping[str, Any]) -> str:
    """This run's wall time and, where cells came from the cache or an earlier run, what they took
    where they were made (``cells_seconds``): a re-run from the cache takes seconds."""
    line = f"Elapsed time of this run: {_duration(results.get('elapsed_seconds'))}."
    cells = finite_number(results.get("cells_seconds"))
    if cells is not None and cells > 0:
        line += f" Compute time of its cells where they were made (this run or earlier ones): {_duration(cells)}."
    return line


def _dump(doc: Any) -> str:
    """YAML (block style, key order kept) where the document allows, else JSON."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
        except yaml.YAMLError:  # a value YAML cannot represent: JSON, str() as the fallback
            pass
    return json.dumps(doc, indent=2, default=str, ensure_ascii=False)


def _cell(text: str) -> str:
    if text == PENDING:
        return f'<td class="pending" title="not measured yet">{escape(text)}</td>'
    if text == UNDEFINED:
        return f'<td class="undefined" title="undefined (no eligible input or a zero reference)">{escape(text)}</td>'
    return f'<td class="num">{escape(text)}</td>'


def _results_table(results: Mapping[str, Any], task: str | None) -> str:
    defects, rows = table_rows(results, task)
    methods = method_names(results, task)
    head1 = ['<th rowspan="2">method</th>', '<th rowspan="2">ACC</th>', '<th rowspan="2">rACC</th>']
    head1 += [f'<th colspan="2">{escape(d)}</th>' for d in defects]
    head2 = "".join("<th>DIR</th><th>rDIR</th>" for _ in defects)
    body = []
    for method, cells in zip(methods, rows):
        cls = ' class="ref"' if method == REFERENCE_METHOD else ""
        body.append(f"<tr{cls}><td>{escape(cells[0])}</td>" + "".join(_cell(c) for c in cells[1:]) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{3 + 2 * len(defects)}">no methods</td></tr>')
    head = f"<tr>{''.join(head1)}</tr>" + (f"<tr>{head2}</tr>" if defects else "")
    return f'<div class="scroll"><table class="results"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'


def _scan_table(scans: Mapping[str, Any]) -> str:
    """Per weight-poisoned teacher: where each planted word ranks among all candidate words by the
    label flip rate it causes in the victim's finetune student, and the five most suspicious words."""
    rows = []
    for defect, scan in scans.items():
        ranks = ", ".join(f"{w}: {r if r is not None else 'not a candidate'}" for w, r in (scan.get("ranks") or {}).items())
        groups = "<br>".join(escape(g["line"]) for g in (scan.get("groups") or [])[:3]) or "–"
        rows.append(f"<tr><td>{escape(defect)}</td><td>{escape(ranks)}</td><td>{escape(', '.join(scan.get('top5') or []))}"
                    f"</td><td>{scan.get('candidates', '–')}</td><td>{groups}</td></tr>")
    return ('<div class="scroll"><table><thead><tr><th>teacher</th><th>rank of each planted word</th>'
            "<th>top 5 suspects</th><th>candidate words</th><th>the word pieces behind the suspects</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table></div>")


def _teacher_table(results: Mapping[str, Any], task: str | None) -> str:
    """The teacher's own success per defect (and, for a backdoor, the backdoored teacher's accuracy)."""
    success = teacher_success(results, task)
    if not success:
        return "<p>No defects in this study.</p>"
    scope_entries: list[Mapping[str, Any]] = []
    tasks = results.get("tasks") or {}
    for t in ([task] if task is not None else list(tasks)):
        scope_entries.append((tasks.get(t) or {}).get("defects") or {})
    rows = []
    for d in defect_names(results):
        info = defect_info(results, d)
        kind = str(info.get("kind") or "")
        detail = ""
        if kind == "coverage_guided":
            detail = f"{info.get('strategy', '?')} / {str(info.get('metric', '?')).upper()}"
        elif kind in ("backdoor", "ripple_vision"):
            settings = sorted({str(e[d]["setting"]) for e in scope_entries
                               if isinstance(e.get(d), Mapping) and e[d].get("setting")})
            detail = ", ".join(settings)
            if "target" in info:
                detail = (detail + ", " if detail else "") + f"target label {info['target']}"
            diverged = sorted({int(e[d]["diverged_at"]) for e in scope_entries
                               if isinstance(e.get(d), Mapping) and e[d].get("diverged_at")})
            if diverged:  # RIPPLe's objective stopped being finite: the teacher is its last finite state
                detail += f"; RIPPLe diverged at step {', '.join(map(str, diverged))}"
        accs = [e[d].get("teacher_acc") for e in scope_entries if isinstance(e.get(d), Mapping)]
        acc = mean_of(accs)
        acc_text = format_value(acc) if acc is not None else ""
        succ = success.get(d)
        rows.append(f"<tr><td>{escape(d)}</td><td>{escape(kind)}</td><td>{escape(detail)}</td>"
                    + _cell(PENDING if succ is None else format_value(succ))
                    + (f'<td class="num">{escape(acc_text)}</td>') + "</tr>")
    scope = "mean over tasks, " if task is None else ""
    return ('<div class="scroll"><table class="teacher"><thead><tr><th>defect</th><th>kind</th><th>setting</th>'
            f"<th>teacher's own success ({scope}%)</th><th>defective teacher's ACC (%)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _figure(make: Callable[[Path], Path | None], folder: Path, name: str, caption: str) -> str:
    """Run one plot function into ``folder`` and embed its PNG; a failure becomes a note, not a crash."""
    try:
        path = make(folder / f"{name}.png")
    except Exception as exc:  # a bad plot must not cost the whole report
        log.warning("report plot %s failed: %s", name, exc, exc_info=True)
        return f'<p class="error">The plot “{escape(caption)}” could not be drawn: {escape(str(exc))}</p>'
    if path is None:
        return ""
    return embed_png(path, caption)


def _progress(results: Mapping[str, Any]) -> tuple[int, int]:
    """Figures measured so far and figures expected (ACC + DIR per defect, per task and method)."""
    defects = defect_names(results)
    done = total = 0
    for t in task_names(results):
        entries = section(results, t)
        for m in method_names(results, t):
            entry = entries.get(m)
            total += 1 + len(defects)
            done += lookup(entry, "acc") is not MISSING
            done += sum(lookup(entry, "dir", d) is not MISSING for d in defects)
    return done, total


# ---------------------------------------------------------------------- the page
def render_report(results: dict, title: str | None = None, plot_dir: str | Path | None = None,
                  sections: Sequence[str] = ()) -> str:
    """The report page as a string (see :func:`write_report`); plots are drawn into ``plot_dir``
    (a temporary folder when ``None``) and embedded; ``sections`` (HTML) go before the configuration."""
    if plot_dir is None:
        with tempfile.TemporaryDirectory(prefix="safetransfer-report-") as tmp:
            return render_report(results, title, tmp, sections)
    folder = Path(plot_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = results.get("config") if isinstance(results.get("config"), Mapping) else {}
    name = config.get("name")
    title = title or (f"safetransfer study: {name}" if name else "safetransfer study")
    tasks = task_names(results)
    methods = method_names(results)
    defects = defect_names(results)
    teacher = (config.get("teacher") or {}).get("model") if isinstance(config.get("teacher"), Mapping) else None

    meta = [f"teacher {teacher}" if teacher else None,
            f"tasks: {', '.join(tasks) or 'none'}",
            f"methods: {', '.join(methods) or 'none'}",
            f"{len(defects)} defect{'s' if len(defects) != 1 else ''}",
            f"profile {results['profile']}" if results.get("profile") else None,
            f"elapsed {_duration(results.get('elapsed_seconds'))}"]
    parts = [f"<h1>{escape(title)}</h1>",
             f'<p class="meta">{escape(" · ".join(m for m in meta if m))}</p>']
    done, total = _progress(results)
    if done < total:
        parts.append(f'<p class="partial">Partial results: {done} of {total} figures (ACC and DIR per task and '
                     f"method) measured so far; {escape(PENDING)} marks the others.</p>")

    parts.append("<h2>What the figures mean</h2><dl class=\"metrics\">")
    parts += [f"<dt>{escape(k)}</dt><dd>{escape(k)} is {escape(v)}</dd>" for k, v in METRIC_HELP]
    parts.append(f'</dl><p class="units">Tables: {escape(UNITS_NOTE)}.</p>')

    # Aggregate over tasks.
    parts.append("<h2>All tasks (mean over tasks)</h2>")
    parts.append(_results_table(results, None))
    parts.append("<h3>The teacher's own success per defect (what there was to inherit)</h3>")
    parts.append(_teacher_table(results, None))
    parts.append(_figure(lambda p: plots.plot_acc_vs_dir(results, p), folder, "acc_vs_dir",
                         "Accuracy against mean DIR over the defects, per task and averaged; up and left is better."))
    parts.append(_figure(lambda p: plots.plot_dir_by_defect(results, p), folder, "dir_by_defect",
                         "DIR per defect and method (mean over tasks); black: the teacher's own success."))
    parts.append(_figure(lambda p: plots.plot_coverage_grid(results, p), folder, "coverage_grid",
                         "Coverage-guided inputs: DIR by strategy and coverage metric (mean over tasks)."))

    for i, t in enumerate(tasks):
        parts.append(f"<h2>Task: {escape(t)}</h2>")
        parts.append(_results_table(results, t))
        parts.append("<h3>The teacher's own success per defect</h3>")
        parts.append(_teacher_table(results, t))
        parts.append(_figure(lambda p, t=t: plots.plot_dir_by_defect(results, p, task=t), folder,
                             f"dir_by_defect_{i}", f"DIR per defect and method on {t}; black: the teacher's own success."))
        parts.append(_figure(lambda p, t=t: plots.plot_coverage_grid(results, p, task=t), folder,
                             f"coverage_grid_{i}", f"Coverage-guided inputs on {t}: DIR by strategy and metric."))
        views = [
            (plots.plot_trigger_shift, "trigger_shift", "How far the trigger moves each student's penultimate features "
             "(in clean-feature standard deviations); black: the backdoored teacher itself."),
            (plots.plot_weight_change, "weight_change", "Relative weight change per layer, student against the teacher "
             "it was made from, and the distribution of the change per weight (students of the clean teacher)."),
            (plots.plot_slice_layers, "slice_layers", "ReMoS's slice per layer: the share of weights excluded and how "
             "large they were against the kept ones."),
            (plots.plot_convergence, "convergence", "Training loss and held-out accuracy against steps per method "
             "(students of the clean teacher)."),
        ]
        drawn = [_figure(lambda p, fn=fn, t=t: fn(results, p, task=t), folder, f"{name}_{i}", caption)
                 for fn, name, caption in views]
        if any(drawn):
            parts.append("<h3>Why a method cuts a defect</h3>")
            parts += drawn
        scans = (results.get("tasks", {}).get(t) or {}).get("trigger_scans") or {}
        if scans:
            parts.append("<h3>Trigger scan of the finetune student (Kurita et al.'s defence)</h3>")
            parts.append(_scan_table(scans))

    parts += list(sections)
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{escape(_dump(dict(config)))}</pre>")
    if results.get("protocol"):
        parts.append("<details><summary>Training protocol per method</summary>"
                     f"<pre>{escape(_dump(results['protocol']))}</pre></details>")
    if results.get("config_fingerprint"):
        parts.append(f'<p class="meta">config fingerprint {escape(str(results["config_fingerprint"]))}</p>')
    if isinstance(results.get("versions"), Mapping):
        made_with = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        parts.append(f'<p class="meta">Made with {escape(made_with)}.</p>')
    parts.append(f'<p class="meta">{escape(_timing(results))}</p>')

    return page(title, parts)


def write_report(results: dict, out_dir: str | Path, title: str | None = None, sections: Sequence[str] = ()) -> Path:
    """Write ``out_dir/report.html``: one self-contained page of the study's results.

    It holds the title, what ACC, DIR, rACC and rDIR mean, the results table aggregated over
    tasks and per task, the teacher's own success per defect, the plots (accuracy vs DIR,
    DIR per defect, the coverage-guided grid) as embedded PNGs, the config and the elapsed
    time. Written atomically (temporary file, then ``os.replace``); partial results render
    with placeholders. ``sections``: more HTML sections, e.g. the data scans and reprogramming
    runs of :func:`safetransfer.report.sections.run_sections`. Returns the page's path.
    """
    out = Path(out_dir) / REPORT_FILE
    # Non-ASCII characters as character references: the file is right whatever the locale's encoding.
    page = render_report(results, title, sections=sections).encode("ascii", "xmlcharrefreplace").decode("ascii")
    atomic_write_text(out, page)
    return out
